"""Every Redis client of the service, with its timeouts set explicitly.

redis-py's defaults moved under us (the redis-py 8 async client reads with a 5 s socket
timeout unless told otherwise), and a blocking read (BLPOP) whose server-side timeout is longer than
the socket's read timeout fails with `TimeoutError` before Redis answers. So no client
relies on the library's defaults: plain commands get `COMMAND_TIMEOUT_S` (a dead or
half-open broker is noticed within it), and a client made for blocking reads gets a read
timeout longer than the longest block it is used for (`blocking_read_timeout`).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import redis
    import redis.asyncio

CONNECT_TIMEOUT_S = 3.0  # TCP connect (and TLS handshake)
COMMAND_TIMEOUT_S = 10.0  # reading the reply of a non-blocking command
BLOCKING_MARGIN_S = 5.0  # a blocking read's socket waits this much longer than Redis itself
HEALTH_CHECK_S = 30  # PING a pooled connection idle this long before reusing it


def blocking_read_timeout(longest_block_s: float) -> float:
    """Socket read timeout of a client whose blocking commands wait up to `longest_block_s`."""
    return max(COMMAND_TIMEOUT_S, float(longest_block_s) + BLOCKING_MARGIN_S)


def _options(longest_block_s: float) -> dict[str, Any]:
    return {"socket_timeout": blocking_read_timeout(longest_block_s), "socket_connect_timeout": CONNECT_TIMEOUT_S,
            "socket_keepalive": True, "health_check_interval": HEALTH_CHECK_S}


def sync_redis(url: str, *, longest_block_s: float = 0.0, decode_responses: bool = False) -> redis.Redis:
    """A redis-py client; `longest_block_s`: the longest BLPOP/BRPOP timeout it is used with."""
    import redis

    return redis.Redis.from_url(url, decode_responses=decode_responses, **_options(longest_block_s))


def async_redis(url: str, *, longest_block_s: float = 0.0) -> redis.asyncio.Redis:
    """A redis.asyncio client (bytes replies); `longest_block_s` as for `sync_redis`."""
    import redis.asyncio as aredis

    return aredis.Redis.from_url(url, **_options(longest_block_s))


def kombu_transport_options() -> dict[str, Any]:
    """The same timeouts for Celery's broker connections (kombu's BRPOP blocks for 1 s at a time)."""
    return {"socket_timeout": COMMAND_TIMEOUT_S, "socket_connect_timeout": CONNECT_TIMEOUT_S,
            "socket_keepalive": True}
