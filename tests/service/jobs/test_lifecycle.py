"""A job's life around it: resumed after a restart, inputs deleted when it ends (outputs kept),
freed on cancel and by the sweeper. Embedded mode (SQLite store) and the Redis store."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image
from seam.service.jobs import create as jc
from seam.service.jobs.stores.sqlite import SqliteJobStore

from testkit.processes import wait_until
from tests.service.fakes import (
    KEY_A,
    FakeEngine,
    GatedEngine,
    MemoryJobStore,
    encode,
    jid,
    png_bytes,
    post_job,
    rgb_image,
    wait,
    zip_bytes,
)


def _crashed_job(data: Path, n: int, done: int, chunk_size: int = 2) -> tuple[str, dict[str, np.ndarray]]:
    """The data directory as a SIGKILLed `seam serve` leaves it: a running job whose first
    `done` images are recorded done, plus one more whose outputs were written but not yet
    recorded, and a partial write in tmp/."""
    from seam.service.storage import Storage

    from seam.common.encoders import encode_png_label as png_label

    storage = Storage(data)
    storage.ensure()
    job_id = jid()
    imgs = {f"im{i:02d}": rgb_image(16 + i % 3, 20, seed=i) for i in range(n)}
    for iid, a in imgs.items():
        p = storage.inputs_dir(job_id) / f"{iid}.png"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(encode(a))
    images = {iid: f"{iid}.png" for iid in imgs}
    opts = {"method": None, "threshold": None, "outputs": ["png"]}
    jc.write_manifest(storage, job_id, opts, images, {}, "upload", None, chunk_size)
    store = SqliteJobStore(data / "jobs.sqlite3", 3600)
    store.create(job_id, n, len(jc.chunked(sorted(images), chunk_size)), opts, "upload")
    store.mark_running(job_id)
    engine = FakeEngine()
    for iid in sorted(imgs)[: done + 1]:
        storage.write_output(job_id, "png", iid, png_label(engine.segment(imgs[iid]).label))
    for iid in sorted(imgs)[:done]:
        store.record_done(job_id, iid)
    for chunk in range(done // chunk_size + 1):  # every chunk that wrote an output had been delivered
        store.incr_delivery(job_id, chunk)
    storage.tmp_dir(job_id).mkdir(parents=True, exist_ok=True)
    (storage.tmp_dir(job_id) / ".w-partial.tmp").write_bytes(b"half")
    orphan = data / "jobs" / jid()  # a submission that died before creating its job
    (orphan / "inputs").mkdir(parents=True)
    store.close()
    return job_id, imgs


def test_restart_resumes_running_job(app_client, tmp_path):
    data = tmp_path / "data"
    job_id, imgs = _crashed_job(data, n=9, done=4)
    out = data / "jobs" / job_id / "outputs" / "png"
    before = {p.name: p.stat().st_ino for p in out.iterdir()}  # 5 files: 4 recorded + 1 not yet recorded
    assert len(before) == 5
    c = app_client(data_dir=data, chunk_size=2)
    final = wait(c, job_id)
    assert (final["state"], final["done"], final["failed"]) == ("succeeded", 9, 0)
    after = {p.name: p.stat().st_ino for p in out.iterdir()}
    assert sorted(after) == sorted(f"{i}.png" for i in imgs)  # every output exactly once
    assert all(after[name] == ino for name, ino in before.items())  # done outputs never rewritten
    engine = FakeEngine()
    for iid, a in imgs.items():
        got = np.asarray(Image.open(out / f"{iid}.png"))
        assert np.array_equal(got, engine.segment(a).label), iid
    assert not (data / "jobs" / job_id / "tmp" / ".w-partial.tmp").exists()
    assert c.app.state.storage.job_ids() == [job_id]  # the never-created job's files were removed
    # its inputs are deleted once it has ended (outputs kept)
    wait_until(lambda: not (data / "jobs" / job_id / "inputs").exists(), 10, what="the inputs deleted")
    assert len(list(out.iterdir())) == 9


def test_jobs_survive_restart_of_the_app(app_client):
    c = app_client(api_keys=[KEY_A])
    r = post_job(c, zip_bytes({"a.png": png_bytes(8, 8)}), KEY_A)
    assert r.status_code == 202, r.text
    job = wait(c, r.json()["id"], KEY_A)
    c.__exit__(None, None, None)  # lifespan shutdown: the store is closed, its lock released
    c2 = app_client(api_keys=[KEY_A])
    again = c2.get(f"/jobs/{job['id']}", headers={"X-API-Key": KEY_A})
    assert again.status_code == 200 and again.json()["state"] == "succeeded"
    assert c2.get(f"/jobs/{job['id']}/results/png/a", headers={"X-API-Key": KEY_A}).status_code == 200


def test_inputs_deleted_when_job_ends_outputs_kept(app_client, mode):
    c = app_client(mode)
    job = post_job(c, zip_bytes({f"{i}.png": png_bytes(8, 8, seed=i) for i in range(3)})).json()
    done = wait(c, job["id"])
    assert done["state"] == "succeeded"
    storage = c.app.state.storage
    assert not storage.inputs_dir(job["id"]).exists()
    assert sorted(p.name for p in (storage.outputs_dir(job["id"]) / "png").iterdir()) == ["0.png", "1.png", "2.png"]
    assert c.get(f"/jobs/{job['id']}/results").status_code == 200


def test_cancel_frees_inputs(app_client):
    engine = GatedEngine()
    c = app_client(engine=engine, warmup=False)
    job = post_job(c, zip_bytes({f"{i}.png": png_bytes(8, 8, seed=i) for i in range(6)})).json()
    assert c.app.state.storage.inputs_dir(job["id"]).exists()
    assert c.delete(f"/jobs/{job['id']}").json()["state"] == "cancelled"
    assert not c.app.state.storage.inputs_dir(job["id"]).exists()
    engine.gate.set()


def test_sweeper_frees_inputs_of_ended_jobs(tmp_path):
    from seam.service.jobs.lifecycle import free_finished_inputs
    from seam.service.storage import Storage

    storage = Storage(tmp_path)
    storage.ensure()
    store = MemoryJobStore(3600)
    running, ended, unknown = jid(), jid(), jid()
    for j in (running, ended, unknown):
        (storage.inputs_dir(j)).mkdir(parents=True)
        (storage.outputs_dir(j)).mkdir(parents=True)
    for j in (running, ended):
        store.create(j, 1, 1, {"outputs": ["png"]}, "upload")
    store.fail(ended, "given up")
    assert sorted(free_finished_inputs(store, storage)) == sorted([ended, unknown])
    assert storage.inputs_dir(running).exists() and storage.outputs_dir(ended).exists()
