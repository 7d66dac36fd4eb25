"""Trainings over REST in embedded mode (the trainer is a child process of the API), on CPU with
the small backbone and a few synthetic images: submit an archive, watch the progress, get a new
version that /segment serves by name while the old version still answers when pinned, promote
it; a trainer killed in the middle of an epoch resumes from its checkpoint; cancel; ownership."""
from __future__ import annotations

import json
import os
import re
import signal
import time
from pathlib import Path

import httpx
import pytest
from seam.service.main import create_app

from testkit.processes import wait_until
from testkit.versions import BG, png_bytes, publish_variant
from tests.service.trainings.helpers import RECIPE, synth_set, tagged_folder, wait_training, zip_folder
from tests.support import serve_in_thread, shapes_photo

pytestmark = pytest.mark.slow

USER, OTHER, ADMIN = "user-key-0123456789", "other-key-0123456789", "admin-key-0123456789"


@pytest.fixture(scope="module")
def archive(tmp_path_factory) -> bytes:
    tmp = tmp_path_factory.mktemp("data")
    return zip_folder(tagged_folder(synth_set(tmp / "synth", n=12), tmp / "tagged"))


@pytest.fixture
def server(make_settings, tmp_path: Path):
    repo = tmp_path / "models"
    publish_variant(repo, "demo", BG[1], tmp_path)  # the service starts with a model to serve
    settings = make_settings(engine="onnx", models_dir=repo, models_poll_s=0.1, warmup=False, threads=1,
                             api_keys=[USER, OTHER], admin_api_keys=[ADMIN])
    with serve_in_thread(create_app(settings)) as url, \
            httpx.Client(base_url=url, timeout=60, headers={"X-API-Key": USER}) as c:
        wait_until(lambda: c.get("/readyz").status_code == 200, 60, 0.05)
        yield c, repo, settings


def _submit(c: httpx.Client, archive: bytes, **fields) -> dict:
    data = {"name": "shapes", "recipe": json.dumps(RECIPE), **fields}
    r = c.post("/trainings", files={"archive": ("data.zip", archive, "application/zip")}, data=data)
    assert r.status_code == 202, r.text
    return r.json()


def _segment(c: httpx.Client, model: str) -> httpx.Response:
    r = c.post("/segment", files={"image": ("x.png", png_bytes(shapes_photo(64, 64)), "image/png")},
               data={"model": model, "format": "json"})
    assert r.status_code == 200, r.text
    return r


def test_train_publish_segment_pin_and_promote(server, archive) -> None:
    c, repo, _ = server
    t0 = time.perf_counter()
    first = _submit(c, archive)
    assert first["state"] in ("queued", "running") and first["links"]["log"].endswith("/log")
    seen: list[dict] = []
    done = wait_training(c, first["id"], seen=seen)
    assert done["state"] == "succeeded", done
    # each epoch's first and last steps are written and logged: the log has them whatever the polls saw
    log = c.get(f"/trainings/{first['id']}/log").text
    assert re.search(r"SEAM epoch 1/1: step 1/\d+", log) and re.search(r"SEAM epoch 1/1: step (\d+)/\1, loss", log), log
    assert any(s["state"] == "running" and s["stage"] for s in seen)
    assert done["model"] == "shapes:1" and done["promoted"]  # a name's first version is promoted
    ev = done["evaluation"]
    assert ev["split"] and ev["new"] is not None and ev["promoted"] is None
    log = c.get(f"/trainings/{first['id']}/log").text
    assert "exported seam" in log and "max |diff|" in log and "published shapes:1" in log
    print(f"first training: {time.perf_counter() - t0:.1f} s, held-out mIoU {ev['new']}")

    # the second fine-tunes the first and asks for promotion: both scored on the same held-out images
    second = wait_training(c, _submit(c, archive, base_model="shapes:1", promote="true")["id"])
    assert second["state"] == "succeeded" and second["model"] == "shapes:2", second
    ev2 = second["evaluation"]
    assert ev2["split"] == ev["split"] and ev2["promoted_ref"] == "shapes:1" and ev2["comparable"]
    assert ev2["promoted"] == pytest.approx(ev["new"], abs=1e-3)  # shapes:1 scored again, same images
    assert second["promoted"] == (ev2["new"] >= ev2["promoted"])
    assert "fine-tuning from shapes:1" in c.get(f"/trainings/{second['id']}/log").text

    # hot reload: the new version is served by name, the old one when pinned
    wait_until(lambda: c.post("/segment", files={"image": ("x.png", png_bytes(shapes_photo(64, 64)))},
                              data={"model": "shapes:2"}).status_code == 200, 30, 0.1)
    assert _segment(c, "shapes:2").headers["X-Seam-Model"] == "shapes:2"
    assert _segment(c, "shapes:1").headers["X-Seam-Model"] == "shapes:1"
    if not second["promoted"]:
        r = c.post(f"/trainings/{second['id']}/promote")
        assert r.status_code == 409 and r.json()["error"]["code"] == "worse"
        r = c.post(f"/trainings/{second['id']}/promote", params={"force": "true"})
        assert r.status_code == 403  # overriding the comparison is an admin's call
        r = c.post(f"/trainings/{second['id']}/promote", params={"force": "true"}, headers={"X-API-Key": ADMIN})
        assert r.status_code == 200 and r.json()["promoted"], r.text
    wait_until(lambda: _segment(c, "shapes").headers["X-Seam-Model"] == "shapes:2", 30, 0.1)
    entry = next(m for m in c.get("/models").json()["repository"] if m["name"] == "shapes")
    assert entry["promoted"] == 2

    # owned by the key: another key sees nothing
    other = {"X-API-Key": OTHER}
    assert c.get(f"/trainings/{first['id']}", headers=other).status_code == 404
    assert c.get("/trainings", headers=other).json()["trainings"] == []
    assert {t["id"] for t in c.get("/trainings").json()["trainings"]} == {first["id"], second["id"]}


def test_killed_trainer_resumes_from_its_checkpoint(server, archive) -> None:
    c, repo, _ = server
    recipe = {**RECIPE, "epochs": 2, "batch_size": 2}  # 5 steps an epoch: room to be killed inside epoch 2
    t = _submit(c, archive, recipe=json.dumps(recipe))
    mid = wait_training(c, t["id"], states=("running",), timeout=120)
    mid = wait_until(lambda: (s := c.get(f"/trainings/{t['id']}").json())["epoch"] == 2 and s["step"] and
                     s["step"] > s["steps"] // 2 and s["step"] < s["steps"] and s, 120, 0.02)
    status = json.loads((settings_dir(server) / t["id"] / "status.json").read_text())
    os.kill(status["pid"], signal.SIGKILL)  # the trainer dies in the middle of epoch 2
    done = wait_training(c, t["id"])
    assert done["state"] == "succeeded" and done["attempts"] == 2 and done["resumed"], done
    log = c.get(f"/trainings/{t['id']}/log").text
    assert "relaunch 1 of" in log and "resumed from" in log and "at epoch 1" in log, log
    print(f"killed at step {mid['step']}/{mid['steps']} of epoch 2; resumed from the epoch-1 checkpoint")


def settings_dir(server) -> Path:
    return Path(server[2].data_dir) / "trainings"


def test_cancel_and_refusals(server, archive) -> None:
    c, _, _ = server
    t = _submit(c, archive)
    wait_training(c, t["id"], states=("running",), timeout=60)
    r = c.post(f"/trainings/{t['id']}/cancel")
    assert r.status_code == 200 and (r.json()["cancel_requested"] or r.json()["state"] == "cancelled")
    done = wait_training(c, t["id"])
    assert done["state"] == "cancelled", done
    assert c.post(f"/trainings/{t['id']}/promote").json()["error"]["code"] == "training_not_finished"
    # refusals: no labels, a bad recipe, unknown base model, a folder without an allowed root behind it
    r = c.post("/trainings", files={"archive": ("d.zip", zip_folder_without_labels(archive))}, data={"name": "x"})
    assert r.status_code == 422 and "label file" in r.json()["error"]["message"]
    r = c.post("/trainings", files={"archive": ("d.zip", archive)}, data={"name": "x", "recipe": '{"crop": 63}'})
    assert r.status_code == 422
    r = c.post("/trainings", files={"archive": ("d.zip", archive)}, data={"name": "x", "base_model": "nope:3"})
    assert r.status_code == 404
    r = c.post("/trainings", json={"name": "x", "folder": "/etc"})
    assert r.status_code == 403
    assert c.get("/trainings/" + "0" * 32).status_code == 404


def zip_folder_without_labels(archive: bytes) -> bytes:
    import io
    import zipfile

    src = zipfile.ZipFile(io.BytesIO(archive))
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for n in src.namelist():
            if not n.endswith("labels.csv"):
                z.writestr(n, src.read(n))
    return buf.getvalue()
