"""Job state: one interface, a Redis implementation (Celery mode, shared by the API
and every worker) and an in-memory one (embedded mode).

The implementations only provide atomic primitives; the state machine (queued ->
running -> succeeded | failed, or -> cancelled) and the status derivation are
written once, in `JobStore`. Image completion is a set (SADD), never a counter, so a
redelivered chunk cannot count an image twice; done and failed are mutually
exclusive (a later success clears an earlier failure). Everything expires after
`ttl_s`.
"""
from __future__ import annotations

import json
import threading
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field

ACTIVE_STATES: tuple[str, ...] = ("queued", "running")
FINAL_STATES: tuple[str, ...] = ("succeeded", "failed", "cancelled")
MAX_ERRORS_SHOWN = 100


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
    def _list(self, offset: int, limit: int) -> tuple[int, list[str]]: ...

    @abstractmethod
    def active_count(self) -> int: ...

    @abstractmethod
    def stats(self) -> dict[str, int]: ...

    @abstractmethod
    def ping(self) -> None: ...

    @abstractmethod
    def delete(self, job_id: str) -> None: ...

    # --- the state machine, written once -------------------------------------------------
    def create(self, job_id: str, total: int, chunks: int, options: dict, source: str) -> JobSnapshot:
        now = time.time()
        meta = {"id": job_id, "state": "queued", "total": str(total), "chunks": str(chunks),
                "options": json.dumps(options), "source": source, "created_at": repr(now),
                "expires_at": repr(now + self.ttl_s)}
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
            errors=self._failures(job_id, errors_limit) if failed else [])

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
        return self._add_failed(job_id, image, error[:2000])

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
                                                        "error": error[:2000]}, True)

    def cancel(self, job_id: str) -> bool:
        return self._transition(job_id, ACTIVE_STATES, {"state": "cancelled", "finished_at": repr(time.time())}, True)

    def list(self, offset: int, limit: int) -> tuple[int, list[JobSnapshot]]:
        total, ids = self._list(offset, limit)
        snaps = [s for s in (self.snapshot(i, errors_limit=0) for i in ids) if s is not None]
        return total, snaps


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

    def _list(self, offset: int, limit: int) -> tuple[int, list[str]]:
        with self._lock:
            self._prune()
            ids = sorted(self._jobs, key=lambda j: float(self._jobs[j]["created_at"]), reverse=True)
            return len(ids), ids[offset:offset + limit]

    def active_count(self) -> int:
        with self._lock:
            self._prune()
            return len(self._active)

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
_INCR_DELIVERY = """
local ttl = redis.call('TTL', KEYS[2])
local n = redis.call('HINCRBY', KEYS[1], ARGV[1], 1)
if ttl > 0 then redis.call('EXPIRE', KEYS[1], ttl) end
return n
"""


class RedisJobStore(JobStore):
    """Celery mode: keys `<prefix>:job:<id>` (hash), `:done` (set), `:failed` (hash),
    `:deliveries` (hash), all expiring with the job; `<prefix>:jobs` and
    `<prefix>:active` (sorted sets by creation time, trimmed past the TTL)."""

    def __init__(self, url: str, prefix: str, ttl_s: int, client: object | None = None) -> None:
        super().__init__(ttl_s)
        import redis

        self.r = client or redis.Redis.from_url(url, decode_responses=True, socket_timeout=10,
                                                socket_connect_timeout=5, health_check_interval=30)
        self.p = prefix
        self._transition_s = self.r.register_script(_TRANSITION)
        self._done_s = self.r.register_script(_ADD_DONE)
        self._failed_s = self.r.register_script(_ADD_FAILED)
        self._deliv_s = self.r.register_script(_INCR_DELIVERY)

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

    def _trim(self, pipe) -> None:
        cutoff = time.time() - self.ttl_s
        pipe.zremrangebyscore(self._jobs_key, "-inf", cutoff)
        pipe.zremrangebyscore(self._active_key, "-inf", cutoff)

    def _create(self, job_id: str, meta: dict[str, str], created_at: float) -> None:
        with self.r.pipeline(transaction=True) as pipe:
            pipe.hset(self._k(job_id), mapping=meta)
            pipe.expire(self._k(job_id), self.ttl_s)
            pipe.zadd(self._jobs_key, {job_id: created_at})
            pipe.zadd(self._active_key, {job_id: created_at})
            self._trim(pipe)
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

    def _list(self, offset: int, limit: int) -> tuple[int, list[str]]:
        with self.r.pipeline(transaction=False) as pipe:
            self._trim(pipe)
            pipe.zcard(self._jobs_key)
            pipe.zrevrange(self._jobs_key, offset, offset + limit - 1)
            *_, total, ids = pipe.execute()
        return int(total), list(ids)

    def active_count(self) -> int:
        with self.r.pipeline(transaction=False) as pipe:
            self._trim(pipe)
            pipe.zcard(self._active_key)
            *_, n = pipe.execute()
        return int(n)

    def stats(self) -> dict[str, int]:
        s = self.r.hgetall(self._stats_key)
        return {"images_done": int(s.get("images_done", 0)), "images_failed": int(s.get("images_failed", 0)),
                "active_jobs": self.active_count()}

    def ping(self) -> None:
        self.r.ping()

    def delete(self, job_id: str) -> None:
        with self.r.pipeline(transaction=True) as pipe:
            pipe.delete(*(self._k(job_id, p) for p in ("", "done", "failed", "deliveries")))
            pipe.zrem(self._jobs_key, job_id)
            pipe.zrem(self._active_key, job_id)
            pipe.execute()
