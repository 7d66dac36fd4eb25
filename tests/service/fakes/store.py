"""The in-memory job store: only tests use it (the product runs on Redis or SQLite,
`seam.service.jobs.stores`); and `open_store`, which opens any of the three for the contract
tests (the `store` fixture of tests/service/conftest.py)."""
from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from seam.service.jobs.stores.base import JobStore
from seam.service.jobs.stores.redis import RedisJobStore
from seam.service.jobs.stores.sqlite import SqliteJobStore

from tests.service.fakes.redis_db import REDIS_URL, drop_keys, redis_reachable

STORE_KINDS = ("memory", "sqlite", "redis")


class MemoryJobStore(JobStore):
    """State in this process's memory: the contract tests run against it beside the real backends,
    and unit tests use it where no database is wanted."""

    def __init__(self, ttl_s: int) -> None:
        super().__init__(ttl_s)
        self._lock = threading.RLock()
        self._jobs: dict[str, dict[str, str]] = {}
        self._done: dict[str, set[str]] = {}
        self._failed: dict[str, dict[str, str]] = {}
        self._deliveries: dict[tuple[str, int], int] = {}
        self._active: set[str] = set()
        self._reserved: dict[str, float] = {}
        self._stats = {"images_done": 0, "images_failed": 0}

    def _prune(self) -> None:
        now = time.time()
        for jid in [j for j, m in self._jobs.items() if float(m["expires_at"]) < now]:
            self.delete(jid)

    def _create(self, job_id: str, meta: dict[str, str], created_at: float) -> None:
        with self._lock:
            self._prune()
            self._jobs[job_id] = dict(meta)
            self._done[job_id] = set()
            self._failed[job_id] = {}
            self._active.add(job_id)
            self._reserved.pop(job_id, None)

    def _meta(self, job_id: str) -> dict[str, str] | None:
        with self._lock:
            m = self._jobs.get(job_id)
            if m is not None and float(m["expires_at"]) < time.time():
                self.delete(job_id)
                return None
            return dict(m) if m is not None else None

    def _transition(self, job_id: str, from_states: tuple[str, ...], fields: dict[str, str], final: bool) -> bool:
        with self._lock:
            m = self._jobs.get(job_id)
            if m is None or m["state"] not in from_states:
                return False
            m.update(fields)
            if final:
                self._active.discard(job_id)
            return True

    def _add_done(self, job_id: str, image: str) -> bool:
        with self._lock:
            if job_id not in self._jobs or image in self._done[job_id]:
                return False
            self._done[job_id].add(image)
            self._stats["images_done"] += 1
            if self._failed[job_id].pop(image, None) is not None:
                self._stats["images_failed"] -= 1
            return True

    def _add_failed(self, job_id: str, image: str, error: str) -> bool:
        with self._lock:
            if job_id not in self._jobs or image in self._done[job_id]:
                return False
            if image not in self._failed[job_id]:
                self._stats["images_failed"] += 1
            self._failed[job_id][image] = error
            return True

    def _counts(self, job_id: str) -> tuple[int, int]:
        with self._lock:
            return len(self._done.get(job_id, ())), len(self._failed.get(job_id, {}))

    def _failures(self, job_id: str, limit: int) -> list[tuple[str, str]]:
        with self._lock:
            return sorted(self._failed.get(job_id, {}).items())[:limit]

    def done_images(self, job_id: str) -> set[str]:
        with self._lock:
            return set(self._done.get(job_id, ()))

    def incr_delivery(self, job_id: str, chunk: int) -> int:
        with self._lock:
            n = self._deliveries.get((job_id, chunk), 0) + 1
            self._deliveries[(job_id, chunk)] = n
            return n

    def _list(self, offset: int, limit: int, owner: str | None) -> tuple[int, list[str]]:
        with self._lock:
            self._prune()
            ids = sorted((j for j, m in self._jobs.items() if owner is None or m.get("owner", "") == owner),
                         key=lambda j: float(self._jobs[j]["created_at"]), reverse=True)
            return len(ids), ids[offset:offset + limit]

    def _live_reservations(self) -> int:
        now = time.time()
        for j in [j for j, t in self._reserved.items() if t < now]:
            del self._reserved[j]
        return len(self._reserved)

    def active_count(self) -> int:
        with self._lock:
            self._prune()
            return len(self._active) + self._live_reservations()

    def _reserve(self, job_id: str, limit: int, until: float) -> int:
        with self._lock:
            n = self.active_count()
            if n >= limit:
                return n
            self._reserved[job_id] = until
            return -1

    def release(self, job_id: str) -> None:
        with self._lock:
            self._reserved.pop(job_id, None)

    def active_ids(self) -> list[str]:
        with self._lock:
            return sorted(self._active)

    def stats(self) -> dict[str, int]:
        with self._lock:
            return {**self._stats, "active_jobs": len(self._active)}

    def ping(self) -> None:
        return None

    def delete(self, job_id: str) -> None:
        with self._lock:
            self._jobs.pop(job_id, None)
            self._done.pop(job_id, None)
            self._failed.pop(job_id, None)
            self._active.discard(job_id)
            for k in [k for k in self._deliveries if k[0] == job_id]:
                del self._deliveries[k]


@contextmanager
def open_store(kind: str, tmp_path: Path, ttl_s: int = 3600) -> Iterator[JobStore]:
    """A fresh, empty store of one kind (memory, sqlite, redis under a key prefix of its own),
    closed and its keys removed afterwards; skips the test when `redis` is asked and none runs."""
    if kind == "memory":
        yield MemoryJobStore(ttl_s=ttl_s)
    elif kind == "sqlite":
        s = SqliteJobStore(tmp_path / "jobs.sqlite3", ttl_s=ttl_s)
        try:
            yield s
        finally:
            s.close()
    else:
        if not redis_reachable():
            pytest.skip("no Redis on 127.0.0.1:6379 (start one with `redis-server --daemonize yes`)")
        prefix = f"seamtest-{uuid.uuid4().hex[:8]}"
        s = RedisJobStore(REDIS_URL, prefix, ttl_s=ttl_s)
        try:
            yield s
        finally:
            drop_keys(s.r, f"{prefix}:")
