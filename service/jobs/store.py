"""Job state: one interface, a Redis implementation (Celery mode, shared by the API
and every worker), a SQLite one (embedded mode: survives a restart of `seam serve`)
and an in-memory one (tests).

The implementations only provide atomic primitives; the state machine (queued ->
running -> succeeded | failed, or -> cancelled) and the status derivation are
written once, in `JobStore`. Image completion is a set (SADD), never a counter, so a
redelivered chunk cannot count an image twice; done and failed are mutually
exclusive (a later success clears an earlier failure). Everything expires after
`ttl_s`.

Every job records its owner (a hash of the API key that created it; "" on an open
server). Slots for new jobs are reserved atomically (`reserve`) before the upload is
read, so concurrent submissions cannot overshoot the active-job limit; a reservation
is turned into the job by `create` or dropped by `release`, and lapses after
`RESERVATION_TTL_S` if its creator died.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import sqlite3
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

ACTIVE_STATES: tuple[str, ...] = ("queued", "running")
MAX_ERRORS_SHOWN = 100
RESERVATION_TTL_S = 3600  # longest a submission may take between reserving a slot and creating the job


def encodable(text: str) -> str:
    """`text` with anything that is not valid UTF-8 (lone surrogates from undecodable
    file names) escaped, so that every string in job state can be stored and served."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


@dataclass
class JobSnapshot:
    id: str
    state: str
    total: int
    done: int
    failed: int
    created_at: float
    expires_at: float
    options: dict
    source: str
    chunks: int
    started_at: float | None = None
    finished_at: float | None = None
    error: str | None = None
    errors: list[tuple[str, str]] = field(default_factory=list)
    owner: str = ""

    @property
    def active(self) -> bool:
        return self.state in ACTIVE_STATES


def _f(v: object) -> float | None:
    return None if v in (None, "") else float(v)  # type: ignore[arg-type]


class JobStore(ABC):
    def __init__(self, ttl_s: int) -> None:
        self.ttl_s = ttl_s

    # --- primitives ---------------------------------------------------------------
    @abstractmethod
    def _create(self, job_id: str, meta: dict[str, str], created_at: float) -> None: ...

    @abstractmethod
    def _meta(self, job_id: str) -> dict[str, str] | None: ...

    @abstractmethod
    def _transition(self, job_id: str, from_states: tuple[str, ...], fields: dict[str, str], final: bool) -> bool:
        """Atomically: if the job's state is in from_states, set fields; final -> leave the active set."""

    @abstractmethod
    def _add_done(self, job_id: str, image: str) -> bool: ...

    @abstractmethod
    def _add_failed(self, job_id: str, image: str, error: str) -> bool: ...

    @abstractmethod
    def _counts(self, job_id: str) -> tuple[int, int]: ...

    @abstractmethod
    def _failures(self, job_id: str, limit: int) -> list[tuple[str, str]]: ...

    @abstractmethod
    def done_images(self, job_id: str) -> set[str]: ...

    @abstractmethod
    def incr_delivery(self, job_id: str, chunk: int) -> int:
        """How many times this chunk has now been started (poison-chunk guard)."""

    @abstractmethod
    def _list(self, offset: int, limit: int, owner: str | None) -> tuple[int, list[str]]:
        """Job ids, newest first; owner None = every owner's."""

    @abstractmethod
    def active_count(self) -> int:
        """Queued + running jobs plus live reservations."""

    @abstractmethod
    def _reserve(self, job_id: str, limit: int, until: float) -> int:
        """Atomically: if active + reserved < limit, reserve a slot for job_id until `until`
        and return -1; else return the count."""

    @abstractmethod
    def release(self, job_id: str) -> None:
        """Drop job_id's reservation (its submission failed)."""

    @abstractmethod
    def active_ids(self) -> list[str]: ...

    @abstractmethod
    def stats(self) -> dict[str, int]: ...

    @abstractmethod
    def ping(self) -> None: ...

    @abstractmethod
    def delete(self, job_id: str) -> None: ...

    # --- the state machine, written once -------------------------------------------------
    def reserve(self, job_id: str, limit: int) -> int | None:
        """None when a slot is now held for job_id; else how many are taken (refuse)."""
        n = self._reserve(job_id, limit, time.time() + RESERVATION_TTL_S)
        return None if n < 0 else n

    def create(self, job_id: str, total: int, chunks: int, options: dict, source: str,
               owner: str = "") -> JobSnapshot:
        """Create the job (state queued), taking over job_id's reservation if any."""
        now = time.time()
        meta = {"id": job_id, "state": "queued", "total": str(total), "chunks": str(chunks),
                "options": json.dumps(options), "source": encodable(source), "created_at": repr(now),
                "expires_at": repr(now + self.ttl_s), "owner": owner}
        self._create(job_id, meta, now)
        snap = self.snapshot(job_id)
        assert snap is not None
        return snap

    def snapshot(self, job_id: str, errors_limit: int = MAX_ERRORS_SHOWN) -> JobSnapshot | None:
        meta = self._meta(job_id)
        if not meta:
            return None
        done, failed = self._counts(job_id)
        return JobSnapshot(
            id=job_id, state=meta["state"], total=int(meta["total"]), done=done, failed=failed,
            created_at=float(meta["created_at"]), expires_at=float(meta["expires_at"]),
            options=json.loads(meta.get("options") or "{}"), source=meta.get("source", ""),
            chunks=int(meta.get("chunks", 0)), started_at=_f(meta.get("started_at")),
            finished_at=_f(meta.get("finished_at")), error=meta.get("error") or None,
            errors=self._failures(job_id, errors_limit) if failed else [], owner=meta.get("owner", ""))

    def state(self, job_id: str) -> str | None:
        meta = self._meta(job_id)
        return meta["state"] if meta else None

    def is_active(self, job_id: str) -> bool:
        return self.state(job_id) in ACTIVE_STATES

    def mark_running(self, job_id: str) -> bool:
        return self._transition(job_id, ("queued",), {"state": "running", "started_at": repr(time.time())}, False)

    def record_done(self, job_id: str, image: str) -> bool:
        return self._add_done(job_id, image)

    def record_failed(self, job_id: str, image: str, error: str) -> bool:
        return self._add_failed(job_id, image, encodable(error[:2000]))

    def failed_images(self, job_id: str) -> set[str]:
        return {i for i, _ in self._failures(job_id, 1 << 30)}

    def finish_if_complete(self, job_id: str) -> str | None:
        """Move an active job whose every image is done or failed to its final state."""
        meta = self._meta(job_id)
        if not meta or meta["state"] not in ACTIVE_STATES:
            return None
        done, failed = self._counts(job_id)
        total = int(meta["total"])
        if done + failed < total:
            return None
        final = "succeeded" if done > 0 or total == 0 else "failed"
        fields = {"state": final, "finished_at": repr(time.time())}
        if final == "failed":
            fields["error"] = "every image failed"
        if not meta.get("started_at"):
            fields["started_at"] = fields["finished_at"]
        return final if self._transition(job_id, ACTIVE_STATES, fields, True) else None

    def fail(self, job_id: str, error: str) -> bool:
        return self._transition(job_id, ACTIVE_STATES, {"state": "failed", "finished_at": repr(time.time()),
                                                        "error": encodable(error[:2000])}, True)

    def cancel(self, job_id: str) -> bool:
        return self._transition(job_id, ACTIVE_STATES, {"state": "cancelled", "finished_at": repr(time.time())}, True)

    def list(self, offset: int, limit: int, owner: str | None = None) -> tuple[int, list[JobSnapshot]]:
        """Newest first; owner None = every owner's jobs (admin)."""
        total, ids = self._list(offset, limit, owner)
        snaps = [s for s in (self.snapshot(i, errors_limit=0) for i in ids) if s is not None]
        return total, snaps

    def close(self) -> None:
        return None


class MemoryJobStore(JobStore):
    """Embedded mode: state lives in this process (lost on restart; outputs stay on disk)."""

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


# --- Redis --------------------------------------------------------------------------
_TRANSITION = """
local st = redis.call('HGET', KEYS[1], 'state')
if not st then return 0 end
local ok = false
for _, s in ipairs(cjson.decode(ARGV[2])) do if s == st then ok = true end end
if not ok then return 0 end
for k, v in pairs(cjson.decode(ARGV[3])) do redis.call('HSET', KEYS[1], k, v) end
if ARGV[4] == '1' then redis.call('ZREM', KEYS[2], ARGV[1]) end
return 1
"""
_ADD_DONE = """
local ttl = redis.call('TTL', KEYS[4])
if ttl < 0 then return -1 end
local added = redis.call('SADD', KEYS[1], ARGV[1])
redis.call('EXPIRE', KEYS[1], ttl)
if added == 1 then
  redis.call('HINCRBY', KEYS[3], 'images_done', 1)
  if redis.call('HDEL', KEYS[2], ARGV[1]) == 1 then redis.call('HINCRBY', KEYS[3], 'images_failed', -1) end
end
return added
"""
_ADD_FAILED = """
local ttl = redis.call('TTL', KEYS[4])
if ttl < 0 then return -1 end
if redis.call('SISMEMBER', KEYS[1], ARGV[1]) == 1 then return 0 end
if redis.call('HSET', KEYS[2], ARGV[1], ARGV[2]) == 1 then redis.call('HINCRBY', KEYS[3], 'images_failed', 1) end
redis.call('EXPIRE', KEYS[2], ttl)
return 1
"""
_RESERVE = """
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[5])
local n = redis.call('ZCARD', KEYS[1]) + redis.call('ZCARD', KEYS[2])
if n >= tonumber(ARGV[3]) then return n end
redis.call('ZADD', KEYS[2], ARGV[4], ARGV[1])
return -1
"""
_INCR_DELIVERY = """
local ttl = redis.call('TTL', KEYS[2])
local n = redis.call('HINCRBY', KEYS[1], ARGV[1], 1)
if ttl > 0 then redis.call('EXPIRE', KEYS[1], ttl) end
return n
"""


class RedisJobStore(JobStore):
    """Celery mode: keys `<prefix>:job:<id>` (hash), `:done` (set), `:failed` (hash),
    `:deliveries` (hash), all expiring with the job; `<prefix>:jobs`, `<prefix>:active`
    and `<prefix>:owner:<owner>` (sorted sets by creation time, trimmed past the TTL);
    `<prefix>:reserved` (sorted set of slot reservations by expiry time)."""

    def __init__(self, url: str, prefix: str, ttl_s: int, client: object | None = None) -> None:
        super().__init__(ttl_s)
        from seam.service.core.redisconn import sync_redis

        self.r = client or sync_redis(url, decode_responses=True)
        self.p = prefix
        self._transition_s = self.r.register_script(_TRANSITION)
        self._done_s = self.r.register_script(_ADD_DONE)
        self._failed_s = self.r.register_script(_ADD_FAILED)
        self._deliv_s = self.r.register_script(_INCR_DELIVERY)
        self._reserve_s = self.r.register_script(_RESERVE)

    def _k(self, job_id: str, part: str = "") -> str:
        return f"{self.p}:job:{job_id}{':' + part if part else ''}"

    @property
    def _jobs_key(self) -> str:
        return f"{self.p}:jobs"

    @property
    def _active_key(self) -> str:
        return f"{self.p}:active"

    @property
    def _stats_key(self) -> str:
        return f"{self.p}:stats"

    @property
    def _reserved_key(self) -> str:
        return f"{self.p}:reserved"

    def _owner_key(self, owner: str) -> str:
        return f"{self.p}:owner:{owner or '-'}"

    def _trim(self, pipe, owner: str | None = None) -> None:
        cutoff = time.time() - self.ttl_s
        pipe.zremrangebyscore(self._jobs_key, "-inf", cutoff)
        pipe.zremrangebyscore(self._active_key, "-inf", cutoff)
        if owner is not None:
            pipe.zremrangebyscore(self._owner_key(owner), "-inf", cutoff)

    def _create(self, job_id: str, meta: dict[str, str], created_at: float) -> None:
        owner = meta.get("owner", "")
        with self.r.pipeline(transaction=True) as pipe:
            pipe.hset(self._k(job_id), mapping=meta)
            pipe.expire(self._k(job_id), self.ttl_s)
            pipe.zadd(self._jobs_key, {job_id: created_at})
            pipe.zadd(self._active_key, {job_id: created_at})
            pipe.zadd(self._owner_key(owner), {job_id: created_at})
            pipe.expire(self._owner_key(owner), self.ttl_s)
            pipe.zrem(self._reserved_key, job_id)
            self._trim(pipe, owner)
            pipe.execute()

    def _meta(self, job_id: str) -> dict[str, str] | None:
        return self.r.hgetall(self._k(job_id)) or None

    def _transition(self, job_id: str, from_states: tuple[str, ...], fields: dict[str, str], final: bool) -> bool:
        return bool(self._transition_s(keys=[self._k(job_id), self._active_key],
                                       args=[job_id, json.dumps(list(from_states)), json.dumps(fields),
                                             "1" if final else "0"]))

    def _keys4(self, job_id: str) -> list[str]:
        return [self._k(job_id, "done"), self._k(job_id, "failed"), self._stats_key, self._k(job_id)]

    def _add_done(self, job_id: str, image: str) -> bool:
        return self._done_s(keys=self._keys4(job_id), args=[image]) == 1

    def _add_failed(self, job_id: str, image: str, error: str) -> bool:
        return self._failed_s(keys=self._keys4(job_id), args=[image, error]) == 1

    def _counts(self, job_id: str) -> tuple[int, int]:
        with self.r.pipeline(transaction=False) as pipe:
            pipe.scard(self._k(job_id, "done"))
            pipe.hlen(self._k(job_id, "failed"))
            done, failed = pipe.execute()
        return int(done), int(failed)

    def _failures(self, job_id: str, limit: int) -> list[tuple[str, str]]:
        if limit <= 0:
            return []
        items: list[tuple[str, str]] = []
        for k, v in self.r.hscan_iter(self._k(job_id, "failed"), count=max(limit, 10)):
            items.append((k, v))
            if len(items) >= limit:
                break
        return sorted(items)

    def done_images(self, job_id: str) -> set[str]:
        return set(self.r.smembers(self._k(job_id, "done")))

    def incr_delivery(self, job_id: str, chunk: int) -> int:
        return int(self._deliv_s(keys=[self._k(job_id, "deliveries"), self._k(job_id)], args=[str(chunk)]))

    def _list(self, offset: int, limit: int, owner: str | None) -> tuple[int, list[str]]:
        key = self._jobs_key if owner is None else self._owner_key(owner)
        with self.r.pipeline(transaction=False) as pipe:
            self._trim(pipe, owner)
            pipe.zcard(key)
            pipe.zrevrange(key, offset, offset + limit - 1)
            *_, total, ids = pipe.execute()
        return int(total), list(ids)

    def active_count(self) -> int:
        with self.r.pipeline(transaction=False) as pipe:
            self._trim(pipe)
            pipe.zremrangebyscore(self._reserved_key, "-inf", time.time())
            pipe.zcard(self._active_key)
            pipe.zcard(self._reserved_key)
            *_, n, r = pipe.execute()
        return int(n) + int(r)

    def _reserve(self, job_id: str, limit: int, until: float) -> int:
        now = time.time()
        return int(self._reserve_s(keys=[self._active_key, self._reserved_key],
                                   args=[job_id, repr(now), str(limit), repr(until), repr(now - self.ttl_s)]))

    def release(self, job_id: str) -> None:
        self.r.zrem(self._reserved_key, job_id)

    def active_ids(self) -> list[str]:
        return list(self.r.zrange(self._active_key, 0, -1))

    def stats(self) -> dict[str, int]:
        s = self.r.hgetall(self._stats_key)
        return {"images_done": int(s.get("images_done", 0)), "images_failed": int(s.get("images_failed", 0)),
                "active_jobs": self.active_count()}

    def ping(self) -> None:
        self.r.ping()

    def delete(self, job_id: str) -> None:
        owner = self.r.hget(self._k(job_id), "owner")
        with self.r.pipeline(transaction=True) as pipe:
            pipe.delete(*(self._k(job_id, p) for p in ("", "done", "failed", "deliveries")))
            pipe.zrem(self._jobs_key, job_id)
            pipe.zrem(self._active_key, job_id)
            if owner is not None:
                pipe.zrem(self._owner_key(owner), job_id)
            pipe.execute()

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.r.close()


# --- SQLite (embedded mode) ----------------------------------------------------------
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
