"""Celery-mode job state in Redis: every primitive of `JobStore` is one Lua script or one
transaction, so the API and any number of workers can share it."""
from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterable, Iterator

from seam.service.core.redisconn import sync_redis
from seam.service.jobs.stores.base import JobStore

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

    def done_among(self, job_id: str, images: Iterable[str]) -> set[str]:
        images = list(images)
        if not images:
            return set()
        flags = self.r.smismember(self._k(job_id, "done"), images)  # Redis >= 6.2
        return {img for img, hit in zip(images, flags, strict=True) if hit}

    def iter_failures(self, job_id: str) -> Iterator[tuple[str, str]]:
        yield from self.r.hscan_iter(self._k(job_id, "failed"), count=1000)

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
