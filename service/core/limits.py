"""Back-pressure: request body limits enforced while the body streams in, and a
bounded number of in-flight computations with a bounded waiting room.

Like Triton's `max_queue_size` or BentoML's `max_concurrency`: overload is answered
at once with 429/503 and `Retry-After`, never by growing a queue.
"""
from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, TypeVar

from seam.service.core.errors import ApiError, error_response
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

if TYPE_CHECKING:
    from seam.service.core.metrics import Metrics

T = TypeVar("T")


def too_large(limit: int) -> ApiError:
    return ApiError(413, "too_large", f"request body is larger than the limit of {limit / 2**20:.1f} MiB")


def body_timeout(seconds: float) -> ApiError:
    return ApiError(408, "request_timeout", f"the request body stalled: nothing arrived for {seconds:g} s",
                    {"Connection": "close"})


class BodyLimitMiddleware:
    """Counts request body bytes as they arrive; over the path's limit -> 413; a body
    that stalls for `idle_timeout_s` -> 408 (a slow client cannot hold a request open).

    `limit_for(method, path)` returns the byte limit (None = unlimited). A declared
    Content-Length above the limit is refused before a byte is read; a chunked body
    is cut off as soon as the running total passes it. The timeout is per read, like
    nginx's client_body_timeout: a large upload on a slow but live link is not cut off.
    """

    def __init__(self, app: ASGIApp, limit_for: Callable[[str, str], int | None],
                 idle_timeout_s: float | None = None) -> None:
        self.app = app
        self.limit_for = limit_for
        self.idle_timeout_s = idle_timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit_for(scope["method"], scope["path"])
        if limit is None and self.idle_timeout_s is None:
            await self.app(scope, receive, send)
            return
        declared = Headers(scope=scope).get("content-length")
        if limit is not None and declared is not None and declared.isdigit() and int(declared) > limit:
            exc = too_large(limit)
            # Answer without reading the body; the server closes the connection.
            await error_response(exc.status_code, exc.code, exc.message, {"Connection": "close"})(scope, receive, send)
            return
        seen = 0

        body_done = False

        async def limited_receive() -> Message:
            nonlocal seen, body_done
            if self.idle_timeout_s is None or body_done:
                # After the body, receive() waits for the client to disconnect (streamed
                # responses listen for that): no timeout there.
                message = await receive()
            else:
                try:
                    message = await asyncio.wait_for(receive(), self.idle_timeout_s)
                except TimeoutError:
                    raise body_timeout(self.idle_timeout_s) from None
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                body_done = not message.get("more_body", False)
                if limit is not None and seen > limit:
                    raise too_large(limit)
            return message

        await self.app(scope, limited_receive, send)


class InflightLimiter:
    """At most `max_inflight` computations at once, `max_waiting` queued behind them.

    Created inside the running event loop (in the app's lifespan).
    """

    def __init__(self, max_inflight: int, max_waiting: int, wait_timeout_s: float) -> None:
        self.max_inflight = max_inflight
        self.max_waiting = max_waiting
        self.wait_timeout_s = wait_timeout_s
        self._sem = asyncio.Semaphore(max_inflight)
        self.inflight = 0
        self.waiting = 0

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        if self._sem.locked():
            if self.waiting >= self.max_waiting:
                raise ApiError(429, "too_many_requests",
                               f"server busy: {self.inflight} requests in flight and {self.waiting} waiting; retry "
                               "later",
                               {"Retry-After": "1"})
            self.waiting += 1
            try:
                await asyncio.wait_for(self._sem.acquire(), self.wait_timeout_s)
            except TimeoutError:
                raise ApiError(503, "unavailable", f"no computation slot freed within {self.wait_timeout_s:g} s; retry "
                                                   "later",
                               {"Retry-After": "5"}) from None
            finally:
                self.waiting -= 1
        else:
            await self._sem.acquire()
        self.inflight += 1
        try:
            yield
        finally:
            self.inflight -= 1
            self._sem.release()


async def run_limited(limiter: InflightLimiter, metrics: Metrics, op: str, method: str,
                      fn: Callable[..., T], *args: Any) -> T:
    """`fn(*args)` in a worker thread inside one of the limiter's in-flight slots, timed per
    (op, method); a refusal for lack of a slot is counted."""
    try:
        async with limiter.slot():
            t0 = time.perf_counter()
            try:
                return await run_in_threadpool(fn, *args)
            finally:
                metrics.inference_latency.labels(op, method).observe(time.perf_counter() - t0)
    except ApiError as exc:
        if exc.status_code in (429, 503) and exc.code in ("too_many_requests", "unavailable"):
            metrics.rejected.labels("busy" if exc.status_code == 429 else "wait_timeout").inc()
        raise
