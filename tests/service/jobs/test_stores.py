"""The job stores (memory, SQLite, Redis: one contract, the `store` fixture runs each): the state
machine, cancel, deliveries and listing, owners, reservations under concurrency, key expiry, and
SQLite's single writer that survives a reopen."""
from __future__ import annotations

import subprocess
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
from seam.service.jobs.stores.redis import RedisJobStore
from seam.service.jobs.stores.sqlite import SqliteJobStore, StoreLockedError

from testkit import REPO
from tests.service.fakes import (
    REDIS_URL,
    jid,
    redis_reachable,
)


def test_state_machine(store):
    j = jid()
    snap = store.create(j, total=3, chunks=1, options={"outputs": ["png"]}, source="upload")
    assert (snap.state, snap.total, snap.done, snap.failed) == ("queued", 3, 0, 0)
    assert store.active_count() == 1 and store.is_active(j)
    assert store.mark_running(j) and not store.mark_running(j)
    assert store.record_done(j, "a") and not store.record_done(j, "a")  # a set: counted once
    assert store.record_failed(j, "b", "bad") and store.record_failed(j, "b", "still bad")
    assert store.finish_if_complete(j) is None
    assert not store.record_failed(j, "a", "late failure of a done image")  # done wins
    assert store.record_done(j, "b")  # a later success clears the failure
    s = store.snapshot(j)
    assert (s.done, s.failed, s.errors) == (2, 0, [])
    store.record_failed(j, "c", "boom")
    assert store.finish_if_complete(j) == "succeeded"
    assert store.finish_if_complete(j) is None  # once
    s = store.snapshot(j)
    assert s.state == "succeeded" and s.errors == [("c", "boom")] and s.finished_at >= s.started_at
    assert store.active_count() == 0
    assert not store.cancel(j)  # final states are final
    st = store.stats()
    assert st["images_done"] >= 2 and st["images_failed"] >= 1


def test_a_chunks_done_images_and_every_failure_in_pages(store):
    """What a chunk asks (which of its images are done) and the whole failure list, read in pages
    (2,500 failures: more than one page of each backend)."""
    j = jid()
    store.create(j, total=3000, chunks=1, options={"outputs": ["png"]}, source="upload")
    for i in range(0, 3000, 7):
        store.record_done(j, f"img{i:05d}")
    failed = {f"img{i:05d}": f"bad {i}" for i in range(3000) if i % 7}
    for image, error in list(failed.items())[:2500]:
        store.record_failed(j, image, error)
    chunk = [f"img{i:05d}" for i in range(690, 720)] + ["never-seen"]
    assert store.done_among(j, chunk) == {f"img{i:05d}" for i in range(690, 720) if i % 7 == 0}
    assert store.done_among(j, []) == set()
    got = list(store.iter_failures(j))
    assert len(got) == 2500 and dict(got) == dict(list(failed.items())[:2500])
    assert store.failed_images(j) == set(dict(got))


def test_cancel_and_all_failed(store):
    a, b = jid(), jid()
    store.create(a, 2, 1, {"outputs": ["png"]}, "upload")
    assert store.cancel(a) and store.state(a) == "cancelled" and not store.is_active(a)
    store.create(b, 1, 1, {"outputs": ["png"]}, "upload")
    store.record_failed(b, "x", "nope")
    assert store.finish_if_complete(b) == "failed" and store.snapshot(b).error


def test_deliveries_and_listing(store):
    ids = [jid() for _ in range(3)]
    for i in ids:
        store.create(i, 1, 2, {"outputs": ["png"]}, "upload")
        time.sleep(0.01)
    assert [store.incr_delivery(ids[0], 1) for _ in range(3)] == [1, 2, 3]
    assert store.incr_delivery(ids[0], 0) == 1
    total, snaps = store.list(0, 2)
    assert total == 3 and [s.id for s in snaps] == ids[::-1][:2]
    store.delete(ids[0])
    assert store.snapshot(ids[0]) is None and store.list(0, 10)[0] == 2


def test_redis_keys_expire():
    if not redis_reachable():
        pytest.skip("no Redis")
    prefix = f"seamtest-{uuid.uuid4().hex[:8]}"
    s = RedisJobStore(REDIS_URL, prefix, ttl_s=120)
    j = jid()
    s.create(j, 2, 1, {"outputs": ["png"]}, "upload")
    s.record_done(j, "a")
    s.record_failed(j, "b", "x")
    s.incr_delivery(j, 0)
    try:
        for key in s.r.scan_iter(f"{prefix}:job:{j}*"):
            assert 0 < s.r.ttl(key) <= 120, key  # nothing without an expiry
    finally:
        s.r.delete(*s.r.scan_iter(f"{prefix}:*"))


# --- SQLite: state that survives a reopen, one writer process --------------------------------
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
                       cwd=REPO)
    assert r.returncode == 3 and "another `seam serve`" in r.stdout, r.stdout + r.stderr
    s.close()
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                       cwd=REPO)
    assert r.returncode == 0, r.stdout + r.stderr  # released on close
    assert issubclass(StoreLockedError, RuntimeError)


def test_owner_filter_in_every_store(store):
    ids = {}
    for owner in ("o1", "o2", "o1"):
        j = jid()
        store.create(j, 1, 1, {"outputs": ["png"]}, "upload", owner=owner)
        ids.setdefault(owner, []).append(j)
        time.sleep(0.005)
    total, snaps = store.list(0, 10, owner="o1")
    assert total == 2 and [s.id for s in snaps] == ids["o1"][::-1]
    assert store.list(0, 10, owner="nobody")[0] == 0
    assert store.list(0, 10)[0] == 3


def test_unencodable_error_text_is_stored_escaped(store):
    j = jid()
    store.create(j, 1, 1, {"outputs": ["png"]}, "upload")
    store.record_failed(j, "a", "cannot open caf\udce9.png")
    assert store.snapshot(j).errors == [("a", "cannot open caf\\udce9.png")]


# --- reservations under concurrency ----------------------------------------------------------
def test_reservations_are_atomic(store):
    limit = 3
    barrier = threading.Barrier(10)

    def attempt(_):
        barrier.wait()
        j = jid()
        return j, store.reserve(j, limit)

    with ThreadPoolExecutor(10) as pool:
        results = list(pool.map(attempt, range(10)))
    won = [j for j, r in results if r is None]
    assert len(won) == limit and all(r == limit for _, r in results if r is not None)
    assert store.active_count() == limit
    store.create(won[0], 1, 1, {"outputs": ["png"]}, "upload")  # a reservation becomes the job
    assert store.active_count() == limit
    store.release(won[1])
    assert store.active_count() == limit - 1
    assert store.reserve(jid(), limit) is None and store.reserve(jid(), limit) == limit
