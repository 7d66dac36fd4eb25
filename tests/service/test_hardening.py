"""Issue 11: job state that survives a restart, jobs owned by their key, authentication
before bodies, archive names, disk amplification, limits under concurrency, no 500s
and no server internals in error bodies. Embedded mode (SQLite store) and the Redis
store of Celery mode where both apply."""
from __future__ import annotations

import asyncio
import io
import json
import os
import struct
import subprocess
import sys
import tarfile
import threading
import time
import uuid
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from seam.service.core.redact import redact
from seam.service.core.security import owner_of
from seam.service.jobs import create as jc
from seam.service.jobs.stores.redis import RedisJobStore
from seam.service.jobs.stores.sqlite import SqliteJobStore, StoreLockedError
from seam.service.main import create_app

from testkit.processes import wait_until
from tests.service.fake_store import MemoryJobStore
from tests.service.fakes import FakeEngine, GatedEngine, encode, png_bytes, rgb_image, tar_bytes, zip_bomb, zip_bytes
from tests.service.helpers import REDIS_URL, assert_error, drop_keys, redis_reachable
from tests.support import entered_clients, wait_done

KEY_A = "a" * 24
KEY_B = "b" * 24
ADMIN = "z" * 24


def jid() -> str:
    return uuid.uuid4().hex


@pytest.fixture(params=["memory", "sqlite", "redis"])
def any_store(request, tmp_path):
    if request.param == "memory":
        yield MemoryJobStore(3600)
    elif request.param == "sqlite":
        s = SqliteJobStore(tmp_path / "jobs.sqlite3", 3600)
        yield s
        s.close()
    else:
        if not redis_reachable():
            pytest.skip("no Redis on 127.0.0.1:6379")
        prefix = f"seamtest-{uuid.uuid4().hex[:8]}"
        s = RedisJobStore(REDIS_URL, prefix, 3600)
        yield s
        drop_keys(s.r, f"{prefix}:")


@pytest.fixture(params=["embedded", "redis-store"])
def mode(request) -> str:
    """API tests run with the embedded SQLite store and with the Redis store of Celery mode
    (jobs processed by in-process threads either way)."""
    if request.param == "redis-store" and not redis_reachable():
        pytest.skip("no Redis on 127.0.0.1:6379")
    return request.param


@pytest.fixture
def app_client(make_settings):
    redis_stores: list[tuple[RedisJobStore, str]] = []
    with entered_clients() as enter:
        def make(mode: str = "embedded", engine=None, **kw) -> TestClient:
            store = None
            if mode == "redis-store":
                prefix = f"seamtest-{uuid.uuid4().hex[:8]}"
                store = RedisJobStore(REDIS_URL, prefix, 3600)
                redis_stores.append((store, prefix))
            return enter(create_app(make_settings(**kw), engine=engine or FakeEngine(), store=store))

        yield make
    for store, prefix in redis_stores:
        drop_keys(store.r, f"{prefix}:")


def post_job(c: TestClient, archive: bytes, key: str | None = None, **fields):
    headers = {"X-API-Key": key} if key else {}
    return c.post("/jobs", files={"archive": ("a.zip", archive, "application/octet-stream")}, data=fields,
                  headers=headers)


def wait(c: TestClient, job_id: str, key: str | None = None, timeout: float = 30.0) -> dict:
    return wait_done(c, job_id, timeout, headers={"X-API-Key": key} if key else None)


# --- 1. SQLite job state ----------------------------------------------------------------
def test_sqlite_store_survives_reopen(tmp_path):
    path = tmp_path / "jobs.sqlite3"
    s = SqliteJobStore(path, 3600)
    j = jid()
    s.create(j, 3, 1, {"outputs": ["png"]}, "upload", owner="o1")
    s.mark_running(j)
    s.record_done(j, "a")
    s.record_failed(j, "b", "bad")
    assert s.incr_delivery(j, 0) == 1
    s.close()
    s2 = SqliteJobStore(path, 3600)
    snap = s2.snapshot(j)
    assert (snap.state, snap.done, snap.failed, snap.owner) == ("running", 1, 1, "o1")
    assert s2.active_ids() == [j] and s2.done_images(j) == {"a"} and s2.failed_images(j) == {"b"}
    assert s2.incr_delivery(j, 0) == 2  # delivery counts persist: a poison image cannot loop across restarts
    assert s2.stats()["images_done"] == 1
    s2.close()


def test_sqlite_store_has_one_writer_process(tmp_path):
    path = tmp_path / "jobs.sqlite3"
    s = SqliteJobStore(path, 3600)
    code = ("import sys; from seam.service.jobs.stores.sqlite import SqliteJobStore, StoreLockedError\n"
            f"try:\n    SqliteJobStore({str(path)!r}, 60)\nexcept StoreLockedError as e:\n    print('LOCKED', e); "
            "sys.exit(3)\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                       cwd=Path(__file__).resolve().parents[2])
    assert r.returncode == 3 and "another `seam serve`" in r.stdout, r.stdout + r.stderr
    s.close()
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                       cwd=Path(__file__).resolve().parents[2])
    assert r.returncode == 0, r.stdout + r.stderr  # released on close
    assert issubclass(StoreLockedError, RuntimeError)


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
    store.incr_delivery(job_id, 0)
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


# --- 2. jobs belong to their key --------------------------------------------------------------
def test_jobs_are_owned_by_their_key(app_client, mode):
    c = app_client(mode, api_keys=[KEY_A, KEY_B], admin_api_keys=[ADMIN])
    a = post_job(c, zip_bytes({"a.png": png_bytes(8, 8)}), KEY_A).json()
    b = post_job(c, zip_bytes({"b.png": png_bytes(8, 8)}), KEY_B).json()
    wait(c, a["id"], KEY_A)
    wait(c, b["id"], KEY_B)
    for path in (f"/jobs/{a['id']}", f"/jobs/{a['id']}/results", f"/jobs/{a['id']}/results/png/a"):
        assert c.get(path, headers={"X-API-Key": KEY_A}).status_code == 200, path
        err = assert_error(c.get(path, headers={"X-API-Key": KEY_B}), 404, "not_found")
        assert err["message"] == f"no job {a['id']} (unknown or expired)"  # same answer as an unknown job
        assert c.get(path, headers={"X-API-Key": ADMIN}).status_code == 200, path
    assert_error(c.delete(f"/jobs/{a['id']}", headers={"X-API-Key": KEY_B}), 404)
    listed_b = c.get("/jobs", headers={"X-API-Key": KEY_B}).json()
    assert [j["id"] for j in listed_b["jobs"]] == [b["id"]] and listed_b["total"] == 1
    listed_admin = c.get("/jobs", headers={"X-API-Key": ADMIN}).json()
    assert {j["id"] for j in listed_admin["jobs"]} == {a["id"], b["id"]}
    assert c.delete(f"/jobs/{b['id']}", headers={"X-API-Key": ADMIN}).status_code == 200
    snap = c.app.state.store.snapshot(a["id"])
    assert snap.owner == owner_of(KEY_A) and KEY_A not in json.dumps(snap.__dict__)  # a hash, never the key


def test_owner_filter_in_every_store(any_store):
    ids = {}
    for owner in ("o1", "o2", "o1"):
        j = jid()
        any_store.create(j, 1, 1, {"outputs": ["png"]}, "upload", owner=owner)
        ids.setdefault(owner, []).append(j)
        time.sleep(0.005)
    total, snaps = any_store.list(0, 10, owner="o1")
    assert total == 2 and [s.id for s in snaps] == ids["o1"][::-1]
    assert any_store.list(0, 10, owner="nobody")[0] == 0
    assert any_store.list(0, 10)[0] == 3


# --- 3. authentication before the body -------------------------------------------------------
def _asgi_call(app, method: str, path: str, headers: dict[str, str], body_chunks, stall_s: float = 0.0):
    """Drive the ASGI app directly; returns (status, body, body bytes the app asked for)."""
    pulled = {"messages": 0}
    chunks = list(body_chunks)
    sent: list[dict] = []

    async def receive():
        pulled["messages"] += 1
        if stall_s:
            await asyncio.sleep(stall_s)
        if chunks:
            data = chunks.pop(0)
            return {"type": "http.request", "body": data, "more_body": bool(chunks)}
        return {"type": "http.disconnect"}

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method, "path": path,
             "raw_path": path.encode(), "query_string": b"", "root_path": "", "scheme": "http",
             "server": ("test", 80), "client": ("127.0.0.1", 1234),
             "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()]}
    asyncio.run(app(scope, receive, send))
    start = next(m for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return start["status"], json.loads(body), pulled["messages"], dict(start["headers"])


@pytest.mark.parametrize("path", ["/segment", "/cam", "/cam/refined", "/jobs"])
def test_unauthenticated_upload_refused_before_the_body_is_read(make_settings, path):
    app = create_app(make_settings(api_keys=[KEY_A]), engine=FakeEngine())
    size = 20 * 1024 * 1024
    headers = {"content-type": "multipart/form-data; boundary=xyz", "content-length": str(size)}
    for key in (None, "wrong-key-" + "x" * 20):
        h = dict(headers, **({"x-api-key": key} if key else {}))
        status, body, pulled, resp_headers = _asgi_call(app, "POST", path, h, [b"x" * 65536] * 4)
        assert status == 401 and body["error"]["code"] == "unauthorized"
        assert pulled == 0  # not a byte of the body was asked for
        assert resp_headers.get(b"connection") == b"close"
    # with the key, an over-limit Content-Length is refused the same way (413, nothing read)
    status, body, pulled, _ = _asgi_call(app, "POST", path, dict(headers, **{"x-api-key": KEY_A},
                                                                 **{"content-length": str(2 * 1024**3)}), [b""])
    assert status == 413 and pulled == 0


def test_stalled_body_times_out(make_settings):
    app = create_app(make_settings(body_timeout_s=0.2), engine=FakeEngine())
    headers = {"content-type": "multipart/form-data; boundary=xyz", "content-length": "100000"}
    t0 = time.perf_counter()
    status, body, _pulled, _ = _asgi_call(app, "POST", "/segment", headers, [b"--xyz\r\n"] * 3, stall_s=5.0)
    assert status == 408 and body["error"]["code"] == "request_timeout"
    assert time.perf_counter() - t0 < 3.0


def test_valid_key_still_uploads(app_client):
    c = app_client(api_keys=[KEY_A])
    r = c.post("/segment", files={"image": ("x.png", png_bytes(), "image/png")}, headers={"X-API-Key": KEY_A})
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    assert_error(c.post("/segment", files={"image": ("x.png", png_bytes(), "image/png")}), 401)


# --- 4. archive member names -----------------------------------------------------------------
def _tar_latin1(name: str, data: bytes) -> bytes:
    return tar_bytes({name: data}, "w", format=tarfile.USTAR_FORMAT, encoding="latin-1")


def _zip_flagged_invalid_utf8() -> bytes:
    raw = bytearray(zip_bytes({"cafX.png": png_bytes(8, 8)}, compression=zipfile.ZIP_STORED))
    raw[:] = raw.replace(b"cafX.png", b"caf\xe9.png")
    for sig, flag_at in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):  # set the 'names are UTF-8' flag
        i = raw.find(sig)
        flags = struct.unpack_from("<H", raw, i + flag_at)[0] | 0x800
        struct.pack_into("<H", raw, i + flag_at, flags)
    return bytes(raw)


def test_non_utf8_member_names(app_client, mode):
    c = app_client(mode)
    tar = _tar_latin1("caf\xe9.png", png_bytes(8, 8))
    assert b"caf\xe9.png" in tar  # really not UTF-8 on the wire
    err = assert_error(post_job(c, tar), 422, "invalid_archive", "not valid UTF-8")
    assert "\\udce9" in err["message"]
    assert_error(post_job(c, _zip_flagged_invalid_utf8()), 422, "invalid_archive")
    assert c.app.state.storage.job_ids() == []  # nothing kept
    # a zip without the UTF-8 flag: names are CP437 by the zip spec, always decodable: accepted
    raw = zip_bytes({"cafX.png": png_bytes(8, 8)}, compression=zipfile.ZIP_STORED).replace(b"cafX", b"caf\x82")
    r = post_job(c, raw)
    assert r.status_code == 202, r.text
    job = wait(c, r.json()["id"])
    assert job["state"] == "succeeded"
    zf = zipfile.ZipFile(io.BytesIO(c.get(f"/jobs/{job['id']}/results").content))
    assert "png/café.png" in zf.namelist()
    assert c.delete(f"/jobs/{job['id']}").status_code == 200


def test_unencodable_error_text_is_stored_escaped(any_store):
    j = jid()
    any_store.create(j, 1, 1, {"outputs": ["png"]}, "upload")
    any_store.record_failed(j, "a", "cannot open caf\udce9.png")
    assert any_store.snapshot(j).errors == [("a", "cannot open caf\\udce9.png")]


# --- 5. disk amplification ----------------------------------------------------------------------
def sparse_tar(real_size: int, name: str = "big.png") -> bytes:
    """An old-GNU sparse member: 512 stored bytes standing for `real_size` bytes on disk."""
    info = tarfile.TarInfo(name)
    info.type = tarfile.GNUTYPE_SPARSE
    info.size = 512
    hdr = bytearray(info.tobuf(format=tarfile.GNU_FORMAT))
    hdr[386:398] = b"%011o\x00" % (real_size - 512)
    hdr[398:410] = b"%011o\x00" % 512
    hdr[483:495] = b"%011o\x00" % real_size
    hdr[148:156] = b" " * 8
    hdr[148:156] = b"%06o\x00 " % sum(hdr)
    return bytes(hdr) + b"\x01" * 512 + b"\x00" * 1024


def test_sparse_tar_refused(app_client, mode):
    raw = sparse_tar(300 * 1024 * 1024)
    assert len(raw) < 4096
    with tarfile.open(fileobj=io.BytesIO(raw)) as tf:
        m = tf.getmembers()[0]
    assert m.issparse() and m.size == 300 * 1024 * 1024  # what a naive extraction would write
    c = app_client(mode)
    assert_error(post_job(c, raw), 422, "invalid_archive", "sparse")
    assert c.app.state.storage.job_ids() == []


def test_expansion_ratio_caps_archive_bombs(app_client, tmp_path):
    c = app_client(max_archive_bytes=1 << 40)  # only the ratio stands in the way
    bomb = zip_bomb(20 << 20)
    assert len(bomb) < 200_000
    assert_error(post_job(c, bomb), 413, "archive_too_large", "SEAM_MAX_EXPANSION_RATIO")
    assert c.app.state.storage.job_ids() == []
    used = c.app.state.storage.usage_bytes(max_age_s=0)
    assert used < 2 << 20  # nothing close to the 20 MiB was kept


def test_data_quota(app_client):
    c = app_client(max_data_bytes=64 * 1024)
    c.app.state.storage.forget_usage()
    big = zip_bytes({f"{i}.png": os.urandom(30_000) for i in range(4)}, compression=zipfile.ZIP_STORED)
    err = assert_error(post_job(c, big), 507, "insufficient_storage", "storage is full")
    assert "/" not in err["message"]
    # a small upload that would expand past what is left of the quota: refused while extracting
    c2 = app_client(max_data_bytes=(c.app.state.storage.usage_bytes(max_age_s=0) + 400_000),
                    max_expansion_ratio=100_000, data_dir=c.app.state.settings.data_dir.parent / "q2")
    assert_error(post_job(c2, zip_bomb(4 << 20)), 413, "archive_too_large", "SEAM_MAX_DATA_BYTES")
    assert c2.app.state.storage.job_ids() == []


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


# --- 6. limits under concurrency ---------------------------------------------------------------
def test_reservations_are_atomic(any_store):
    limit = 3
    barrier = threading.Barrier(10)

    def attempt(_):
        barrier.wait()
        j = jid()
        return j, any_store.reserve(j, limit)

    with ThreadPoolExecutor(10) as pool:
        results = list(pool.map(attempt, range(10)))
    won = [j for j, r in results if r is None]
    assert len(won) == limit and all(r == limit for _, r in results if r is not None)
    assert any_store.active_count() == limit
    any_store.create(won[0], 1, 1, {"outputs": ["png"]}, "upload")  # a reservation becomes the job
    assert any_store.active_count() == limit
    any_store.release(won[1])
    assert any_store.active_count() == limit - 1
    assert any_store.reserve(jid(), limit) is None and any_store.reserve(jid(), limit) == limit


def test_ten_concurrent_submissions_against_a_limit_of_three(app_client, mode):
    engine = GatedEngine(hold_s=30)
    c = app_client(mode, engine=engine, warmup=False, max_active_jobs=3)
    archive = zip_bytes({f"{i}.png": png_bytes(16, 16, seed=i) for i in range(40)})
    barrier = threading.Barrier(10)

    def go(_):
        barrier.wait()
        return post_job(c, archive)

    try:
        with ThreadPoolExecutor(10) as pool:
            answers = list(pool.map(go, range(10)))
        codes = sorted(r.status_code for r in answers)
        assert codes == [202] * 3 + [503] * 7, codes
        for r in answers:
            if r.status_code == 503:
                assert r.json()["error"]["code"] == "queue_full"
        assert len(c.app.state.storage.job_ids()) == 3  # the refused ones left nothing behind
    finally:
        engine.gate.set()


def test_label_tables_and_json_bodies_are_capped(app_client, allowed_root):
    c = app_client(max_labels_bytes=4096)
    big = json.dumps({f"img{i}.png": ["red"] for i in range(400)}).encode()
    assert len(big) > 4096
    arch = zip_bytes({"a.png": png_bytes(8, 8), "labels.json": big})
    assert_error(post_job(c, arch), 413, "labels_too_large")
    r = c.post("/jobs", files={"archive": ("a.zip", zip_bytes({"a.png": png_bytes(8, 8)})),
                               "labels": ("l.json", big, "application/json")})
    assert_error(r, 413, "labels_too_large")
    (allowed_root / "d").mkdir()
    (allowed_root / "d" / "a.png").write_bytes(png_bytes(8, 8))
    body = json.dumps({"directory": "d", "labels": {f"img{i}": ["red"] for i in range(400)}})
    assert_error(c.post("/jobs", content=body, headers={"content-type": "application/json"}), 413, "too_large")
    assert c.app.state.storage.job_ids() == []


def test_deeply_nested_json_is_422(app_client, allowed_root):
    c = app_client()
    deep = b'{"a.png": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    assert_error(post_job(c, zip_bytes({"a.png": png_bytes(8, 8), "labels.json": deep})), 422, "invalid_labels")
    r = c.post("/jobs", files={"archive": ("a.zip", zip_bytes({"a.png": png_bytes(8, 8)})),
                               "labels": ("l.json", deep, "application/json")})
    assert_error(r, 422, "invalid_labels")
    body = b'{"directory": "d", "labels": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    assert_error(c.post("/jobs", content=body, headers={"content-type": "application/json"}), 422)


# --- 7. no 500s, nothing internal in error bodies ------------------------------------------------
def test_over_long_names_are_4xx(app_client, allowed_root):
    c = app_client()
    job = post_job(c, zip_bytes({"a.png": png_bytes(8, 8)})).json()
    wait(c, job["id"])
    assert_error(c.get(f"/jobs/{job['id']}/results/png/{'x' * 5000}"), 404)
    assert_error(c.get(f"/jobs/{job['id']}/results/png/{'x/' * 3000}y"), 404)
    assert_error(c.get(f"/static/{'x' * 5000}.js"), 404)
    assert_error(post_job(c, zip_bytes({f"{'n' * 250}.png": png_bytes(8, 8)})), 422, "invalid_archive", "longer")
    assert_error(post_job(c, tar_bytes({f"{'d' * 150}/" * 8 + "a.png": png_bytes(8, 8)})), 422, "invalid_archive")
    r = c.post("/jobs", json={"directory": "x" * 300})
    assert_error(r, 422, "invalid_directory")
    assert c.app.state.storage.job_ids() == [job["id"]]


def test_error_bodies_carry_no_server_paths(app_client, allowed_root, tmp_path):
    c = app_client()
    r = c.post("/jobs", json={"directory": str(allowed_root / "missing")})
    err = assert_error(r, 422, "invalid_directory")
    assert str(tmp_path) not in err["message"] and "<allowed_root>/missing" in err["message"]


def test_dead_broker_address_not_disclosed(make_settings):
    dead = RedisJobStore("redis://127.0.0.1:1/0", "seamdead", 3600)
    app = create_app(make_settings(), engine=FakeEngine(), store=dead)
    with TestClient(app, raise_server_exceptions=False) as c:
        for r in (c.get("/jobs"), c.get("/readyz")):
            assert r.status_code == 503
            assert "127.0.0.1" not in r.text and ":1" not in r.text.replace('":1', ""), r.text


def test_redact():
    roots = [("/srv/seam/data", "<data>")]
    assert redact("Error 111 connecting to 10.0.0.5:6379. Connection refused.") == \
        "Error 111 connecting to <host> Connection refused."
    assert redact("open /srv/seam/data/jobs/x/labels.json", roots) == "open <data>/jobs/x/labels.json"
    assert redact("at <Foo object at 0x7f3a2b4c5d60>") == "at <Foo object at 0x…>"
    assert redact("redis://:secret@broker:6379/0 down") == "<url> down"
    assert redact("file /home/u/a.png and multipart/form-data") == "file <path> and multipart/form-data"
    assert redact("labels of 'img:3' unknown class 'cat'") == "labels of 'img:3' unknown class 'cat'"


def _table_status(row_start: str) -> int:
    """The status the hostile-input table of docs/service.md gives for the row starting with `row_start`."""
    from tests.support import REPO

    text = (REPO / "docs" / "service.md").read_text()
    table = text[text.index("### Hostile inputs"):]
    for line in table.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 2 and cells[0].startswith(row_start):
            return int(cells[1][:3])
    raise AssertionError(f"no row {row_start!r} in the hostile-input table")


def test_hostile_input_table_matches_the_answers(app_client):
    from tests.service.fakes import lying_jpeg, zip_lying_sizes

    c = app_client(max_archive_bytes=1 << 20)
    deep = b'{"tasks": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    observed = {
        "empty (zero-byte) image": [c.post("/segment", files={"image": ("a.png", b"")})],
        "image whose header claims more pixels": [c.post("/segment", files={"image": ("a.jpg", lying_jpeg())})],
        "not an image": [c.post("/segment", files={"image": ("a.png", b"hello")})],
        "lying zip header": [post_job(c, zip_lying_sizes(4 << 20, declared=100))],
        "zip bomb": [post_job(c, zip_bomb(3 << 20))],
        "deeply nested JSON": [c.post(path, content=deep, headers={"content-type": "application/json"})
                               for path in ("/jobs", "/labelstudio/predict", "/cvat/detect")],
    }
    for row, answers in observed.items():
        want = _table_status(row)
        for r in answers:
            assert_error(r, want)
    assert "corrupt" in observed["lying zip header"][0].json()["error"]["message"]
    assert c.app.state.storage.job_ids() == []


def test_chunked_upload_past_the_limit_is_413_and_nothing_kept(app_client):
    # No Content-Length: httpx sends a generator body with Transfer-Encoding: chunked, so only
    # the running count of the body middleware can stop it.
    c = app_client(max_job_upload_mb=1, max_upload_mb=1)
    archive = zip_bytes({f"im{i}.bmp": np.random.default_rng(i).integers(0, 255, (300, 300, 3), np.uint8).tobytes()
                         for i in range(12)})
    assert len(archive) > 2 << 20
    head = b"--B\r\nContent-Disposition: form-data; name=\"archive\"; filename=\"a.zip\"\r\n\r\n"
    sent = []

    def body():
        for part in (head, *(archive[i:i + 65536] for i in range(0, len(archive), 65536)), b"\r\n--B--\r\n"):
            sent.append(len(part))
            yield part

    r = c.post("/jobs", content=body(), headers={"content-type": "multipart/form-data; boundary=B"})
    assert_error(r, 413, "too_large")
    assert sent  # went through the generator (chunked), no Content-Length
    assert c.app.state.storage.job_ids() == [] and c.get("/jobs").json()["total"] == 0
    data = c.app.state.settings.data_dir
    assert not [p for p in data.rglob("*") if p.is_file() and not p.name.startswith("jobs.sqlite3")]
    r = c.post("/segment", content=(b"\x89PNG" + bytes(65536) for _ in range(40)),
               headers={"content-type": "multipart/form-data; boundary=B"})
    assert_error(r, 413, "too_large")
