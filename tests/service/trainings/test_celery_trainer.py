"""Trainings with a real `seam trainer` Celery worker on Redis (the API in broker mode sends
`seam.train` by name): progress over REST; the trainer's pool process killed in the middle of an
epoch (the main process requeues the task at once: reject_on_worker_lost), then the whole
trainer killed (the broker would give its unacknowledged task back only after the visibility
timeout, 6 h: the API sees the trainer's heartbeat stop and sends the training again, to a new
trainer), and the training resumes each time from its last epoch checkpoint and publishes a version."""
from __future__ import annotations

import json
import os
import signal
import sys
import time

import httpx
import pytest

from seam.modelrepo import versions
from testkit.processes import seam_serve_argv, wait_until
from testkit.versions import BG, publish_variant
from tests.service.fakes.stack import stack
from tests.service.trainings.helpers import RECIPE, synth_set, tagged_folder, wait_training, zip_folder

pytestmark = pytest.mark.slow


def _up(url: str) -> bool:
    try:
        return httpx.get(f"{url}/healthz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _mid_epoch(c: httpx.Client, tid: str, epoch: int) -> dict:
    def check() -> dict | None:
        s = c.get(f"/trainings/{tid}").json()
        ok = s["state"] == "running" and s["epoch"] == epoch and s["step"] and s["steps"]
        per = s["steps"] // s["epochs"] if ok else 0
        # an epoch's first step is always written (the status throttles the others to one per 0.5 s, which
        # fast steps can all fall inside): from it to the epoch's last step, the kill lands inside the epoch
        return s if ok and (epoch - 1) * per < s["step"] < epoch * per else None

    return wait_until(check, 120, 0.02, lambda: c.get(f"/trainings/{tid}").text)


def test_celery_trainer_resumes_after_kills(redis_ok, tmp_path) -> None:
    data = zip_folder(tagged_folder(synth_set(tmp_path / "synth", n=12), tmp_path / "tagged"))
    publish_variant(tmp_path / "models", "demo", BG[1], tmp_path)
    # the default visibility timeout (6 h): only the heartbeat can bring the training back in time
    with stack(tmp_path, "celery", SEAM_TRAINING_STALE_S="3", SEAM_TRAINING_HEARTBEAT_S="0.5") as s:
        # /readyz waits for a segmentation worker; trainings need none: the API is up when it answers
        api = s._spawn([*seam_serve_argv(s.port), "--log-level", "warning"], "api")
        wait_until(lambda: _up(s.url) or api.poll() is not None, 60, 0.1)
        trainer_argv = [sys.executable, "-m", "seam.cli", "trainer", "--loglevel", "warning"]
        first = s._spawn([*trainer_argv, "--hostname", "trainer1@%h"], "trainer1")
        with httpx.Client(base_url=s.url, timeout=60) as c:
            recipe = {**RECIPE, "epochs": 3, "batch_size": 2}
            r = c.post("/trainings", files={"archive": ("d.zip", data)},
                       data={"name": "shapes", "recipe": json.dumps(recipe)})
            assert r.status_code == 202, r.text
            tid = r.json()["id"]
            status_file = tmp_path / "data" / "trainings" / tid / "status.json"

            _mid_epoch(c, tid, 2)
            pool_pid = json.loads(status_file.read_text())["pid"]
            assert pool_pid != first.pid  # the training runs in the pool process
            os.kill(pool_pid, signal.SIGKILL)
            t0 = time.perf_counter()
            wait_until(lambda: c.get(f"/trainings/{tid}").json()["attempts"] == 2, 60, 0.05,
                       lambda: s.logs("trainer1"))
            print(f"pool process killed: attempt 2 started {time.perf_counter() - t0:.1f} s later")

            _mid_epoch(c, tid, 3)
            s.kill(first)  # the whole trainer: main and pool process
            s._spawn([*trainer_argv, "--hostname", "trainer2@%h"], "trainer2")
            t0 = time.perf_counter()
            done = wait_training(c, tid, timeout=240)
            assert done["state"] == "succeeded", (done, s.logs("trainer2"))
            assert done["attempts"] == 3 and done["resumed"] and done["model"] == "shapes:1"
            log = c.get(f"/trainings/{tid}/log").text
            assert "at epoch 1" in log and "at epoch 2" in log, log  # each attempt from the last epoch's checkpoint
            assert "heartbeat stopped" in log, log  # the way back after the whole trainer died
            print(f"trainer killed: finished {time.perf_counter() - t0:.1f} s later on a new trainer")
    entry = versions.list_models(tmp_path / "models")["shapes"]
    assert entry.promoted == 1 and (entry.versions[1].path / ".checkpoints" / "seam_final.pth").is_file()
