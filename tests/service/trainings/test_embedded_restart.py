"""An API in embedded mode killed (SIGKILL) while its child trains: the child dies with it
(PR_SET_PDEATHSIG, no orphan holding the training), and the restarted API relaunches the
unfinished training, which resumes from its last epoch checkpoint and publishes its version."""
from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import httpx
import pytest

from seam.modelrepo import versions
from testkit.processes import seam_serve_argv, service_env, start_server, stop_process, wait_until
from testkit.versions import BG, publish_variant
from tests.service.trainings.helpers import RECIPE, synth_set, tagged_folder, wait_training, zip_folder

pytestmark = pytest.mark.slow


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie counts as gone
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.is_file() and stat.read_text().split()[2] == "Z")


def test_api_killed_mid_training_resumes_it_after_restart(tmp_path: Path) -> None:
    archive = zip_folder(tagged_folder(synth_set(tmp_path / "synth", n=12), tmp_path / "tagged"))
    repo = tmp_path / "models"
    publish_variant(repo, "demo", BG[1], tmp_path)
    env = service_env(SEAM_MODELS_DIR=str(repo), SEAM_DATA_DIR=str(tmp_path / "data"), SEAM_THREADS="1")
    url, api = start_server(seam_serve_argv, env, tmp_path / "serve.log", timeout=120)
    try:
        with httpx.Client(base_url=url, timeout=60) as c:
            recipe = {**RECIPE, "epochs": 2, "batch_size": 2}
            r = c.post("/trainings", files={"archive": ("d.zip", archive)},
                       data={"name": "shapes", "recipe": json.dumps(recipe)})
            assert r.status_code == 202, r.text
            tid = r.json()["id"]
            wait_until(lambda: (s := c.get(f"/trainings/{tid}").json())["epoch"] == 2 and s["step"] < s["steps"],
                       120, 0.05, lambda: c.get(f"/trainings/{tid}").text)
        child = json.loads((tmp_path / "data" / "trainings" / tid / "status.json").read_text())["pid"]
        api.send_signal(signal.SIGKILL)
        api.wait(10)
        wait_until(lambda: not _alive(child), 10, 0.05, "the trainer child outlived the API")
        t0 = time.perf_counter()
        url, api = start_server(seam_serve_argv, env, tmp_path / "serve2.log", timeout=120)
        with httpx.Client(base_url=url, timeout=60) as c:
            done = wait_training(c, tid, timeout=240)
            assert done["state"] == "succeeded" and done["attempts"] == 2 and done["resumed"], done
            log = c.get(f"/trainings/{tid}/log").text
            assert "the API restarted: relaunching" in log and "at epoch 1" in log, log
        print(f"restarted API finished the training {time.perf_counter() - t0:.1f} s later")
    finally:
        stop_process(api)
    assert versions.list_models(repo)["shapes"].promoted == 1
