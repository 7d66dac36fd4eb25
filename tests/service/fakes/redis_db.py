"""The tests' Redis on loopback: the databases the tests use, whether one answers, and removing a
test's keys."""
from __future__ import annotations

from tests.support import redis_url

REDIS_DB = 13  # the end-to-end stacks
REDIS_URL = redis_url(14)  # in-process tests (stores, the realtime path)


def redis_reachable() -> bool:
    try:
        import redis

        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=0.5).ping()
        return True
    except Exception:
        return False


def redis_client():
    import redis

    return redis.Redis.from_url(redis_url(REDIS_DB), socket_connect_timeout=1)


def drop_keys(r, prefix: str) -> None:
    """Delete a test's keys: everything under `prefix` and kombu's queue bindings for it."""
    keys = list(r.scan_iter(f"{prefix}*")) + list(r.scan_iter(f"_kombu.binding.{prefix}*"))
    if keys:
        r.delete(*keys)
