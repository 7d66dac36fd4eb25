"""Embedded-mode job state in SQLite (`<data_dir>/jobs.sqlite3`), with the lock file that
keeps a second `seam serve` off the same data directory."""
from __future__ import annotations

import fcntl
import json
import os
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from seam.service.jobs.stores.base import JobStore

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (id TEXT PRIMARY KEY, state TEXT NOT NULL, owner TEXT NOT NULL DEFAULT '',
                                 created_at REAL NOT NULL, expires_at REAL NOT NULL, meta TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS jobs_by_created ON jobs (created_at);
CREATE INDEX IF NOT EXISTS jobs_by_owner ON jobs (owner, created_at);
CREATE INDEX IF NOT EXISTS jobs_by_state ON jobs (state);
CREATE TABLE IF NOT EXISTS done (job_id TEXT NOT NULL, image TEXT NOT NULL, PRIMARY KEY (job_id, image)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS failed (job_id TEXT NOT NULL, image TEXT NOT NULL, error TEXT NOT NULL,
                                   PRIMARY KEY (job_id, image)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS deliveries (job_id TEXT NOT NULL, chunk INTEGER NOT NULL, n INTEGER NOT NULL,
                                       PRIMARY KEY (job_id, chunk)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS reserved (job_id TEXT PRIMARY KEY, until REAL NOT NULL);
CREATE TABLE IF NOT EXISTS stats (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""
_ACTIVE_SQL = "state IN ('queued', 'running')"
_PROCESS_LOCKS: dict[str, list[int]] = {}  # db path -> [fd, users]: one process may open it several times (tests)
_PROCESS_LOCKS_GUARD = threading.Lock()


class StoreLockedError(RuntimeError):
    """Another process already writes this job database."""


def _lock_exclusive(path: Path) -> str:
    key = str(path.resolve())
    with _PROCESS_LOCKS_GUARD:
        if key in _PROCESS_LOCKS:
            _PROCESS_LOCKS[key][1] += 1
            return key
        fd = os.open(key + ".lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise StoreLockedError(
                "another `seam serve` already runs on this data directory (embedded mode has one writer); "
                "stop it, or give this one its own SEAM_DATA_DIR") from None
        _PROCESS_LOCKS[key] = [fd, 1]
        return key


def _unlock(key: str) -> None:
    with _PROCESS_LOCKS_GUARD:
        entry = _PROCESS_LOCKS.get(key)
        if entry is None:
            return
        entry[1] -= 1
        if entry[1] <= 0:
            os.close(entry[0])  # closing the descriptor drops the flock
            del _PROCESS_LOCKS[key]


class SqliteJobStore(JobStore):
    """Embedded mode: `<data_dir>/jobs.sqlite3` (WAL). One process writes it (an
    exclusive lock file refuses a second `seam serve` on the same data directory) through
    one connection serialised by a lock; every primitive is one transaction, committed
    before it returns, so a SIGKILL loses at most the image being processed (whose
    output file, if complete, is recognised on the resumed run)."""

    def __init__(self, path: Path, ttl_s: int) -> None:
        super().__init__(ttl_s)
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock_key = _lock_exclusive(self.path)
        self._lock = threading.RLock()
        try:
            self._db = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None, timeout=30)
            self._db.execute("PRAGMA journal_mode=WAL")
            # NORMAL in WAL mode survives a crash of the process (not of the machine's power).
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(_SCHEMA)
        except BaseException:
            _unlock(self._lock_key)
            raise
        self._closed = False

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _q(self, sql: str, args: tuple = ()) -> list[tuple]:
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    def _prune(self, c: sqlite3.Connection) -> None:
        expired = [r[0] for r in c.execute("SELECT id FROM jobs WHERE expires_at < ?", (time.time(),))]
        for jid in expired:
            self._delete(c, jid)
        c.execute("DELETE FROM reserved WHERE until < ?", (time.time(),))

    @staticmethod
    def _delete(c: sqlite3.Connection, job_id: str) -> None:
        for table, col in (("jobs", "id"), ("done", "job_id"), ("failed", "job_id"), ("deliveries", "job_id"),
                           ("reserved", "job_id")):
            c.execute(f"DELETE FROM {table} WHERE {col} = ?", (job_id,))  # noqa: S608 - fixed names

    @staticmethod
    def _bump(c: sqlite3.Connection, name: str, by: int) -> None:
        c.execute("INSERT INTO stats (name, value) VALUES (?, ?) "
                  "ON CONFLICT(name) DO UPDATE SET value = value + excluded.value", (name, by))

    def _create(self, job_id: str, meta: dict[str, str], created_at: float) -> None:
        with self._tx() as c:
            self._prune(c)
            c.execute("INSERT OR REPLACE INTO jobs (id, state, owner, created_at, expires_at, meta) "
                      "VALUES (?, ?, ?, ?, ?, ?)", (job_id, meta["state"], meta.get("owner", ""), created_at,
                                                    float(meta["expires_at"]), json.dumps(meta)))
            c.execute("DELETE FROM reserved WHERE job_id = ?", (job_id,))

    def _meta(self, job_id: str) -> dict[str, str] | None:
        rows = self._q("SELECT meta, expires_at FROM jobs WHERE id = ?", (job_id,))
        if not rows or rows[0][1] < time.time():
            return None
        return json.loads(rows[0][0])

    def _transition(self, job_id: str, from_states: tuple[str, ...], fields: dict[str, str], final: bool) -> bool:
        with self._tx() as c:
            row = c.execute("SELECT meta FROM jobs WHERE id = ?", (job_id,)).fetchone()
            if row is None:
                return False
            meta = json.loads(row[0])
            if meta["state"] not in from_states:
                return False
            meta.update(fields)
            c.execute("UPDATE jobs SET state = ?, meta = ? WHERE id = ?", (meta["state"], json.dumps(meta), job_id))
            return True

    def _exists(self, c: sqlite3.Connection, job_id: str) -> bool:
        return c.execute("SELECT 1 FROM jobs WHERE id = ? AND expires_at >= ?", (job_id, time.time())).fetchone() \
            is not None

    def _add_done(self, job_id: str, image: str) -> bool:
        with self._tx() as c:
            if not self._exists(c, job_id):
                return False
            if c.execute("INSERT OR IGNORE INTO done (job_id, image) VALUES (?, ?)", (job_id, image)).rowcount == 0:
                return False
            self._bump(c, "images_done", 1)
            if c.execute("DELETE FROM failed WHERE job_id = ? AND image = ?", (job_id, image)).rowcount:
                self._bump(c, "images_failed", -1)
            return True

    def _add_failed(self, job_id: str, image: str, error: str) -> bool:
        with self._tx() as c:
            if not self._exists(c, job_id):
                return False
            if c.execute("SELECT 1 FROM done WHERE job_id = ? AND image = ?", (job_id, image)).fetchone():
                return False
            new = c.execute("SELECT 1 FROM failed WHERE job_id = ? AND image = ?", (job_id, image)).fetchone() is None
            c.execute("INSERT OR REPLACE INTO failed (job_id, image, error) VALUES (?, ?, ?)", (job_id, image, error))
            if new:
                self._bump(c, "images_failed", 1)
            return True

    def _counts(self, job_id: str) -> tuple[int, int]:
        with self._lock:
            done = self._db.execute("SELECT COUNT(*) FROM done WHERE job_id = ?", (job_id,)).fetchone()[0]
            failed = self._db.execute("SELECT COUNT(*) FROM failed WHERE job_id = ?", (job_id,)).fetchone()[0]
        return int(done), int(failed)

    def _failures(self, job_id: str, limit: int) -> list[tuple[str, str]]:
        if limit <= 0:
            return []
        rows = self._q("SELECT image, error FROM failed WHERE job_id = ? ORDER BY image LIMIT ?", (job_id, limit))
        return [(r[0], r[1]) for r in rows]

    def done_images(self, job_id: str) -> set[str]:
        return {r[0] for r in self._q("SELECT image FROM done WHERE job_id = ?", (job_id,))}

    def done_among(self, job_id: str, images: Iterable[str]) -> set[str]:
        images, out = list(images), set()
        for i in range(0, len(images), 500):  # under SQLite's bound-parameter limit
            part = images[i:i + 500]
            marks = ",".join("?" * len(part))
            out.update(r[0] for r in self._q(f"SELECT image FROM done WHERE job_id = ? AND image IN ({marks})",
                                             (job_id, *part)))
        return out

    def iter_failures(self, job_id: str) -> Iterator[tuple[str, str]]:
        last = ""
        while True:  # keyset pages: the lock is held per page, never across the caller's work
            rows = self._q("SELECT image, error FROM failed WHERE job_id = ? AND image > ? ORDER BY image LIMIT 1000",
                           (job_id, last))
            yield from ((r[0], r[1]) for r in rows)
            if len(rows) < 1000:
                return
            last = rows[-1][0]

    def incr_delivery(self, job_id: str, chunk: int) -> int:
        with self._tx() as c:
            c.execute("INSERT INTO deliveries (job_id, chunk, n) VALUES (?, ?, 1) "
                      "ON CONFLICT(job_id, chunk) DO UPDATE SET n = n + 1", (job_id, chunk))
            return int(c.execute("SELECT n FROM deliveries WHERE job_id = ? AND chunk = ?",
                                 (job_id, chunk)).fetchone()[0])

    def _list(self, offset: int, limit: int, owner: str | None) -> tuple[int, list[str]]:
        with self._tx() as c:
            self._prune(c)
        where, args = ("", ()) if owner is None else ("WHERE owner = ?", (owner,))
        total = self._q(f"SELECT COUNT(*) FROM jobs {where}", args)[0][0]  # noqa: S608 - fixed clauses
        ids = self._q(f"SELECT id FROM jobs {where} ORDER BY created_at DESC LIMIT ? OFFSET ?",  # noqa: S608
                      (*args, limit, offset))
        return int(total), [r[0] for r in ids]

    def _count_active(self, c: sqlite3.Connection) -> int:
        now = time.time()
        jobs = c.execute(f"SELECT COUNT(*) FROM jobs WHERE {_ACTIVE_SQL} AND expires_at >= ?", (now,)).fetchone()[0]
        held = c.execute("SELECT COUNT(*) FROM reserved WHERE until >= ?", (now,)).fetchone()[0]
        return int(jobs) + int(held)

    def active_count(self) -> int:
        with self._lock:
            return self._count_active(self._db)

    def _reserve(self, job_id: str, limit: int, until: float) -> int:
        with self._tx() as c:
            n = self._count_active(c)
            if n >= limit:
                return n
            c.execute("INSERT OR REPLACE INTO reserved (job_id, until) VALUES (?, ?)", (job_id, until))
            return -1

    def release(self, job_id: str) -> None:
        with self._tx() as c:
            c.execute("DELETE FROM reserved WHERE job_id = ?", (job_id,))

    def release_all(self) -> None:
        """At start-up: reservations of submissions that died with the previous process."""
        with self._tx() as c:
            c.execute("DELETE FROM reserved")

    def active_ids(self) -> list[str]:
        return [r[0] for r in self._q(f"SELECT id FROM jobs WHERE {_ACTIVE_SQL} AND expires_at >= ? "
                                      "ORDER BY created_at", (time.time(),))]

    def known_ids(self) -> set[str]:
        return {r[0] for r in self._q("SELECT id FROM jobs")} | {r[0] for r in self._q("SELECT job_id FROM reserved")}

    def stats(self) -> dict[str, int]:
        rows = dict(self._q("SELECT name, value FROM stats"))
        return {"images_done": int(rows.get("images_done", 0)), "images_failed": int(rows.get("images_failed", 0)),
                "active_jobs": self.active_count()}

    def ping(self) -> None:
        self._q("SELECT 1")

    def delete(self, job_id: str) -> None:
        with self._tx() as c:
            self._delete(c, job_id)

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            try:
                self._db.close()
            finally:
                _unlock(self._lock_key)
