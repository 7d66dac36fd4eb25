"""The reader of a job over a data set (jobs/streamed.py), in process: chunks queued as read,
reading paused while the broker holds the bound (back-pressure), the total one more than read
until the end, every line counted once, cancel stops it, nothing usable fails the job."""
from __future__ import annotations

import threading
import time

from seam.service.datasets.entries import Entry, LineError
from seam.service.jobs.streamed import READ_MARKER, StreamJob, read_stream
from seam.service.storage import Storage

from tests.service.fakes import MemoryJobStore, jid
from tests.support import wait_until


class Broker:
    """A dispatcher whose queue drains only when told to."""

    def __init__(self) -> None:
        self.queued: list[tuple[int, list[str]]] = []
        self.taken = 0

    def queued_chunks(self) -> int:
        return len(self.queued) - self.taken

    def submit(self, job_id, chunks, first=0):
        self.queued += [(first + i, c) for i, c in enumerate(chunks)]


def _job(tmp_path, entries, chunk_size=2, max_queued=3, max_lines=10**6):
    store, storage, j = MemoryJobStore(3600), Storage(tmp_path / "d"), jid()
    store.create(j, 1, 0, {"outputs": ["png"]}, "url")
    ended = []
    job = StreamJob(j, lambda: iter(entries), ["red", "green"], chunk_size, max_queued, max_lines, tmp_path / "r",
                    ended.append)
    return job, store, storage, ended


def test_back_pressure_and_counting(tmp_path):
    entries = [Entry(i, f"e{i}", f"s3://b/e{i}.png", ["red"] if i % 2 else None) for i in range(1, 21)]
    entries.insert(5, LineError(99, "not JSON"))
    entries.append(Entry(30, "e1", "s3://b/dup.png"))  # duplicate id
    entries.append(Entry(31, "x", "s3://b/x.png", ["purple"]))  # unknown class
    job, store, storage, ended = _job(tmp_path, entries)
    broker = Broker()
    t = threading.Thread(target=read_stream, args=(job, store, storage, broker))
    t.start()
    wait_until(lambda: broker.queued_chunks() == 3, 10)
    time.sleep(0.3)
    assert len(broker.queued) == 3  # paused at the bound: nothing more read into chunks
    snap = store.snapshot(job.job_id)
    assert snap.total == 7 + 1 and snap.state == "queued"  # 6 entries + 1 line error read, + 1 while reading
    broker.taken = 10**6  # the broker drains
    t.join(10)
    assert [n for n, _ in broker.queued] == list(range(10)) and sum(len(c) for _, c in broker.queued) == 20
    assert storage.read_chunk(job.job_id, 0)[0] == {"n": 1, "id": "e1", "uri": "s3://b/e1.png", "labels": [0]}
    snap = store.snapshot(job.job_id)
    assert (snap.total, snap.failed) == (23, 3)  # every line once: 20 images + 3 unusable lines
    assert {e for e, _ in snap.errors} == {"line 99", "line 30", "line 31"}
    assert b"".join(storage.iter_job_file(job.job_id, READ_MARKER)) == b'{"total": 23, "chunks": 10}'
    assert ended == []  # nothing processed yet: the job goes on


def test_cancel_stops_reading(tmp_path):
    entries = [Entry(i, f"e{i}", f"s3://b/e{i}.png") for i in range(1, 101)]
    job, store, storage, _ = _job(tmp_path, entries)
    broker = Broker()
    t = threading.Thread(target=read_stream, args=(job, store, storage, broker))
    t.start()
    wait_until(lambda: broker.queued_chunks() == 3, 10)
    store.cancel(job.job_id)
    t.join(10)
    assert not t.is_alive() and len(broker.queued) == 3


def test_nothing_usable_fails_the_job(tmp_path):
    job, store, storage, ended = _job(tmp_path, [LineError(1, "not JSON"), LineError(2, "no image URI")])
    read_stream(job, store, storage, Broker())
    snap = store.snapshot(job.job_id)
    assert snap.state == "failed" and "no usable image" in (snap.error or "") and snap.failed == 2
    assert ended == ["failed"]


def test_too_many_lines_runs_what_was_read(tmp_path):
    entries = [Entry(i, f"e{i}", f"s3://b/e{i}.png") for i in range(1, 11)]
    job, store, storage, _ = _job(tmp_path, entries, max_lines=4)
    broker = Broker()
    broker.taken = 10**6
    read_stream(job, store, storage, broker)
    snap = store.snapshot(job.job_id)
    assert snap.total == 5 and sum(len(c) for _, c in broker.queued) == 4
    assert "SEAM_DATASET_MAX_LINES" in dict(snap.errors)["manifest"]


def test_a_job_whose_reader_died_is_failed_by_the_sweeper(tmp_path):
    from seam.service.jobs.streamed import READ_STALE_S, READING, fail_lost_readers, reader_lost

    store, storage = MemoryJobStore(3600), Storage(tmp_path / "d")
    jobs = {}
    for name in ("reading", "lost", "read", "archive"):
        j = jobs[name] = jid()
        store.create(j, 1, 0, {"outputs": ["png"]}, "url")
        storage.write_manifest(j, {"id": j, "created_at": 1000.0, "images": {}, "options": {"outputs": ["png"]},
                                   "streamed": name != "archive"})
    now = 1000.0 + 10 * READ_STALE_S
    storage.put_job_file(jobs["reading"], READING, [f'{{"at": {now - 5}}}'.encode()])
    storage.put_job_file(jobs["lost"], READING, [f'{{"at": {now - READ_STALE_S - 1}}}'.encode()])
    storage.put_job_file(jobs["read"], READ_MARKER, [b'{"total": 1, "chunks": 1}'])
    assert not reader_lost(storage, jobs["reading"], storage.read_manifest(jobs["reading"]), now)
    assert fail_lost_readers(store, storage, now) == [jobs["lost"]]
    assert store.snapshot(jobs["lost"]).state == "failed" and "submit it again" in store.snapshot(jobs["lost"]).error
    assert all(store.snapshot(jobs[n]).state == "queued" for n in ("reading", "read", "archive"))
