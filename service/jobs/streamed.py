"""Jobs over a data set read as a stream (an s3:// prefix, a manifest uploaded or by URL): the
reader that turns entries into chunks while the job already runs.

The reader runs in a thread of the API process that accepted the job. It holds one chunk of
entries at a time: each full chunk is written as a job file (`chunks/<n>.jsonl`: id, uri,
labels, line number) and its ids are handed to the dispatcher; while the broker holds
SEAM_DATASET_MAX_QUEUED_CHUNKS chunks or more, reading pauses (back-pressure). Image ids are
checked for duplicates in a SQLite file on local disk (bounded memory however long the
manifest). A line that cannot be used is recorded failed as `line <n>` (errors.json, the results
manifest) and counted, so every line is counted exactly once, as done or failed.

The job's total is the entries read so far + 1 while reading (it cannot finish early), the exact
count once the end is reached. A job cancelled meanwhile stops the reading.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import sqlite3
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from seam.service.core.errors import ApiError
from seam.service.core.urlrules import UrlRefused
from seam.service.datasets.entries import Entry, LineError
from seam.service.jobs.dispatch import Dispatcher
from seam.service.jobs.stores.base import JobStore
from seam.service.storage import Storage

from seam.common.classes import resolve_labels

log = logging.getLogger("seam.service")

READ_MARKER = "read.json"  # written when the whole data set has been read: {"total", "chunks"}
READING = "reading.json"  # the reader's heartbeat: {"at": epoch seconds}, at least every READ_BEAT_S
READ_BEAT_S = 10.0
READ_STALE_S = 90.0  # a reading job without a beat for this long has lost its reader (its API died)


@dataclass
class StreamJob:
    """What the reader of one job needs."""

    job_id: str
    entries: Callable[[], Iterator[Entry | LineError]]  # opened in the reader's thread
    names: Sequence[str]  # foreground classes, to resolve labels
    chunk_size: int
    max_queued: int
    max_lines: int
    scratch: Path  # a local folder for the duplicate index
    on_end: Callable[[str], None] | None = None  # called with the final state when reading ended the job


@dataclass
class ReadReport:
    entries: int = 0  # images queued
    errors: int = 0  # lines recorded failed
    chunks: int = 0
    stopped: str | None = None  # why reading stopped early (cancelled, too many lines, unreadable source)
    beat_at: float = 0.0  # monotonic time of the last heartbeat written


def _beat(job: StreamJob, storage: Storage, rep: ReadReport) -> None:
    """Say the reader is alive (another API's sweeper fails a job whose reader has died)."""
    now = time.monotonic()
    if now - rep.beat_at >= READ_BEAT_S:
        storage.put_job_file(job.job_id, READING, [json.dumps({"at": time.time()}).encode()])
        rep.beat_at = now


class _Seen:
    """Image ids already read, in a SQLite file: memory stays flat for millions of ids."""

    def __init__(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=folder, prefix="seen-", suffix=".sqlite")
        os.close(fd)
        self.path = Path(name)
        self.db = sqlite3.connect(name, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=OFF")
        self.db.execute("PRAGMA synchronous=OFF")
        self.db.execute("CREATE TABLE seen (id TEXT PRIMARY KEY) WITHOUT ROWID")

    def add(self, iid: str) -> bool:
        """True when `iid` is new."""
        return self.db.execute("INSERT OR IGNORE INTO seen VALUES (?)", (iid,)).rowcount == 1

    def close(self) -> None:
        self.db.close()
        self.path.unlink(missing_ok=True)


def read_stream(job: StreamJob, store: JobStore, storage: Storage, dispatcher: Dispatcher) -> ReadReport:
    """Read the whole data set into chunks (see the module docstring); the job's final state is
    set here when reading ends it (nothing readable, or every chunk already processed)."""
    rep = ReadReport()
    _beat(job, storage, rep)
    seen = _Seen(job.scratch)
    pending: list[dict] = []
    try:
        for item in job.entries():
            _beat(job, storage, rep)  # a clock read per line; a write every READ_BEAT_S
            if rep.entries + rep.errors >= job.max_lines:
                rep.stopped = f"more than {job.max_lines} lines (SEAM_DATASET_MAX_LINES): the rest was not read"
                break
            line = _check(item, seen, job.names)
            if isinstance(line, LineError):
                store.record_failed(job.job_id, f"line {line.n}", line.error)
                rep.errors += 1
                continue
            pending.append(line)
            rep.entries += 1
            if len(pending) >= job.chunk_size:
                if not _flush(job, store, storage, dispatcher, rep, pending):
                    rep.stopped = "cancelled"
                    break
                pending = []
        else:
            if pending and not _flush(job, store, storage, dispatcher, rep, pending):
                rep.stopped = "cancelled"
    except (UrlRefused, FileNotFoundError, OSError, RuntimeError, ValueError) as exc:
        rep.stopped = f"the data set could not be read: {type(exc).__name__}: {str(exc)[:300]}"
    finally:
        seen.close()
    _end(job, store, storage, rep)
    return rep


def _check(item: Entry | LineError, seen: _Seen, names: Sequence[str]) -> dict | LineError:
    if isinstance(item, LineError):
        return item
    if not seen.add(item.id):
        return LineError(item.n, f"duplicate image id {item.id!r} (an earlier line writes the same outputs)")
    labels = None
    if item.labels is not None:
        try:
            labels = resolve_labels(item.labels, names)
        except ValueError as exc:
            return LineError(item.n, f"labels: {exc}")
    return {"n": item.n, "id": item.id, "uri": item.uri, "labels": labels}


def _flush(job: StreamJob, store: JobStore, storage: Storage, dispatcher: Dispatcher, rep: ReadReport,
           lines: list[dict]) -> bool:
    """Write and queue one chunk once the broker has room; False when the job is no longer active."""
    while dispatcher.queued_chunks() >= job.max_queued:
        if not store.is_active(job.job_id):
            return False
        _beat(job, storage, rep)
        time.sleep(0.05)
    if not store.is_active(job.job_id):
        return False
    storage.put_chunk(job.job_id, rep.chunks, lines)
    # counted before it is queued: done + failed can never reach the total while reading
    store.set_total(job.job_id, rep.entries + rep.errors + 1, rep.chunks + 1)
    dispatcher.submit(job.job_id, [[line["id"] for line in lines]], first=rep.chunks)
    rep.chunks += 1
    return True


def _end(job: StreamJob, store: JobStore, storage: Storage, rep: ReadReport) -> None:
    if rep.stopped == "cancelled":
        return
    if rep.stopped and rep.stopped.startswith("the data set"):
        store.fail(job.job_id, rep.stopped)
        _ended(job, "failed")
        return
    if rep.stopped:  # too many lines: what was read runs; the rest is reported
        store.record_failed(job.job_id, "manifest", rep.stopped)
        rep.errors += 1
    total = rep.entries + rep.errors
    if rep.entries == 0:
        store.set_total(job.job_id, total, rep.chunks)
        store.fail(job.job_id, "the data set lists no usable image" + (f" ({rep.errors} lines with errors, "
                                                                       "see errors)" if rep.errors else ""))
        _ended(job, "failed")
        return
    storage.put_job_file(job.job_id, READ_MARKER, [f'{{"total": {total}, "chunks": {rep.chunks}}}'.encode()])
    store.set_total(job.job_id, total, rep.chunks)
    final = store.finish_if_complete(job.job_id)  # every chunk may have been processed already
    if final is not None:
        _ended(job, final)


def _ended(job: StreamJob, state: str) -> None:
    if job.on_end is not None:
        with contextlib.suppress(Exception):
            job.on_end(state)


def start_reader(job: StreamJob, store: JobStore, storage: Storage, dispatcher: Dispatcher) -> threading.Thread:
    """Read in a daemon thread (the request that created the job has already been answered)."""

    def run() -> None:
        try:
            rep = read_stream(job, store, storage, dispatcher)
            log.info("job %s: read %d images in %d chunks, %d line errors%s", job.job_id, rep.entries, rep.chunks,
                     rep.errors, f" ({rep.stopped})" if rep.stopped else "")
        except Exception as exc:  # noqa: BLE001 - a reader must never die silently with the job active
            log.exception("job %s: reading its data set failed", job.job_id)
            store.fail(job.job_id, f"reading the data set failed: {type(exc).__name__}")

    t = threading.Thread(target=run, name=f"seam-reader-{job.job_id[:8]}", daemon=True)
    t.start()
    return t


def refuse(exc: UrlRefused) -> ApiError:
    """A refused data-set URL as the API answers it."""
    disabled = "disabled on this server" in str(exc) or "not under a bucket" in str(exc) or "not one of" in str(exc)
    return ApiError(403 if disabled else 422, "url_refused", str(exc))


def resume_streamed(store: JobStore, storage: Storage, submit: Callable[..., None], job_id: str,
                    finished: set[str]) -> bool:
    """Embedded mode after a restart: re-queue what is unfinished of each chunk file when the data
    set had been read to its end; a job whose reading was cut short is failed (its reader died with
    the process: submit it again). True when re-queued."""
    try:
        marker = json.loads(b"".join(storage.iter_job_file(job_id, READ_MARKER)))
    except (FileNotFoundError, ValueError):
        store.fail(job_id, "the server stopped while reading the job's data set; submit it again "
                           "(outputs already written stay where they are)")
        return False
    for n in range(int(marker["chunks"])):
        pending = [line["id"] for line in storage.read_chunk(job_id, n) if line["id"] not in finished]
        submit(job_id, [pending], first=n)  # empty chunks too: they let the job finish
    log.info("resuming job %s over its data set: %d chunks", job_id, int(marker["chunks"]))
    return True


def reader_lost(storage: Storage, job_id: str, manifest: dict, now: float | None = None) -> bool:
    """Whether a job over a data set is still being read by nobody: no end-of-reading marker and
    no heartbeat for READ_STALE_S (its API process died mid-read)."""
    if not manifest.get("streamed"):
        return False
    try:
        b"".join(storage.iter_job_file(job_id, READ_MARKER))
        return False
    except FileNotFoundError:
        pass
    try:
        at = float(json.loads(b"".join(storage.iter_job_file(job_id, READING)))["at"])
    except (FileNotFoundError, ValueError, KeyError, TypeError):
        at = float(manifest.get("created_at") or 0)
    return (now or time.time()) - at > READ_STALE_S


def fail_lost_readers(store: JobStore, storage: Storage, now: float | None = None) -> list[str]:
    """Fail the active jobs whose data set stopped being read (the sweeper of any API calls this)."""
    failed = []
    for job_id in store.active_ids():
        try:
            manifest = storage.read_manifest(job_id)
        except (FileNotFoundError, ValueError):
            continue
        if reader_lost(storage, job_id, manifest, now) and store.fail(
                job_id, "the API process reading the job's data set stopped before the end; submit it again "
                        "(outputs already written stay where they are)"):
            failed.append(job_id)
    return failed
