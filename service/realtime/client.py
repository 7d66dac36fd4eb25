"""The API side of synchronous requests computed by the workers.

submit(): refuse at once when no live worker consumes the realtime queue (503) or the
queue is full (429, `Retry-After`); else store the upload under an expiring key, queue
its id, ring the realtime Celery queue and wait for the reply until the deadline
(SEAM_REQUEST_TIMEOUT_S, then 504). On every exit, the client hanging up included, the
request key is deleted: the worker checks it before and while computing (between engine
passes), so a request nobody waits for any more stops costing the worker.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from seam.service.core.config import Settings
from seam.service.core.errors import ApiError
from seam.service.realtime.fleet import FleetView
from seam.service.realtime.messages import REALTIME_BUDGET_S, REALTIME_TASK, Keys, Reply, SyncRequest
from starlette.concurrency import run_in_threadpool

log = logging.getLogger("seam.service")


class RealtimeClient:
    GONE_POLL_S = 0.25  # how often a waiting request checks that its client is still connected

    def __init__(self, settings: Settings, fleet: FleetView, celery: Any, client: Any,
                 blocking: Any = None) -> None:
        self.settings = settings
        self.fleet = fleet
        self.celery = celery
        self.r = client  # redis.asyncio client for plain commands (bytes responses, short read timeout)
        # ... and one whose read timeout outlasts the reply's BLPOP (seam.service.core.redisconn)
        self.blocking = blocking if blocking is not None else client
        self.keys = Keys(settings.key_prefix)
        self.queue = settings.realtime_queue_name
        self.waiting = 0  # requests of this process waiting for a worker

    def _busy(self, why: str) -> ApiError:
        return ApiError(429, "too_many_requests", f"server busy: {why}; retry later", {"Retry-After": "1"})

    async def submit(self, req: SyncRequest, data: bytes,
                     gone: Callable[[], Awaitable[bool]] | None = None) -> Reply:
        """The worker's reply; `gone`: whether the HTTP client has hung up (then 499, and the
        request is withdrawn from the worker)."""
        s = self.settings
        problem = self.fleet.problem(self.queue)
        if problem:
            raise ApiError(503, "no_worker", f"no worker is serving synchronous requests: {problem}",
                           {"Retry-After": "10"})
        if len(data) > s.max_upload_bytes:  # the body limit already holds; never queue more than it
            raise ApiError(413, "too_large", f"image larger than {s.max_upload_mb:g} MiB")
        if self.waiting >= s.realtime_max_queue:
            raise self._busy(f"{self.waiting} requests of this API process are waiting for a worker")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + s.request_timeout_s
        rid = uuid.uuid4().hex
        self.waiting += 1
        try:
            queued = await self.r.llen(self.keys.pending)
            if queued >= s.realtime_max_queue:
                raise self._busy(f"{queued} synchronous requests are queued for the workers "
                                 f"(limit {s.realtime_max_queue})")
            ttl_ms = int((s.request_timeout_s + 5) * 1000)
            async with self.r.pipeline(transaction=True) as pipe:
                pipe.hset(self.keys.request(rid), mapping={"params": req.model_dump_json(), "image": data})
                pipe.pexpire(self.keys.request(rid), ttl_ms)
                pipe.rpush(self.keys.pending, rid)
                pipe.pexpire(self.keys.pending, ttl_ms)  # every id in it is stale once nothing was pushed for this long
                await pipe.execute()
            try:
                await run_in_threadpool(self._ring, rid)
            except Exception as exc:  # noqa: BLE001 - kombu's errors vary with the transport
                log.warning("could not queue a synchronous request: %s", exc)
                raise ApiError(503, "unavailable", "the broker did not accept the request; retry later",
                               {"Retry-After": "10"}) from None
            got = await self._wait_reply(rid, deadline - loop.time(), gone)
            if got is None:
                raise ApiError(504, "timeout", f"no worker answered within {s.request_timeout_s:g} s "
                                               "(SEAM_REQUEST_TIMEOUT_S): the workers are busy or stuck; retry later",
                               {"Retry-After": "10"})
            return Reply.decode(got[1])
        except TimeoutError:
            raise ApiError(504, "timeout", f"no worker answered within {s.request_timeout_s:g} s "
                                           "(SEAM_REQUEST_TIMEOUT_S); retry later", {"Retry-After": "10"}) from None
        finally:
            self.waiting -= 1
            with contextlib.suppress(Exception):  # it expires anyway
                await self.r.delete(self.keys.request(rid))

    async def _wait_reply(self, rid: str, left: float, gone: Callable[[], Awaitable[bool]] | None) -> Any:
        """BLPOP of the reply until the deadline (None when it passed), given up early when the client has gone."""
        loop = asyncio.get_running_loop()
        end = loop.time() + left + 5  # Redis answers None at the deadline itself; this guards a stuck socket
        pop = asyncio.ensure_future(self.blocking.blpop([self.keys.reply(rid)], timeout=max(left, 0.01)))
        try:
            while True:
                wait = end - loop.time()
                if wait <= 0:
                    raise TimeoutError
                done, _ = await asyncio.wait({pop}, timeout=wait if gone is None else min(wait, self.GONE_POLL_S))
                if done:
                    return pop.result()
                if gone is not None and await gone():
                    raise ApiError(499, "client_closed_request", "the client closed the connection")
        finally:
            if not pop.done():
                pop.cancel()
                with contextlib.suppress(BaseException):
                    await pop

    def _ring(self, rid: str) -> None:
        """Wake a worker: one message per request on the realtime queue (it expires with the deadline)."""
        # Its own time limits, not the chunk task's defaults (SEAM_TASK_*_TIME_LIMIT_S, sized for a
        # chunk of a job): a wake-up serves for up to REALTIME_BUDGET_S, each request up to its deadline.
        soft = self.settings.request_timeout_s + REALTIME_BUDGET_S + 5
        self.celery.send_task(REALTIME_TASK, args=[rid], queue=self.queue, expires=self.settings.request_timeout_s,
                              soft_time_limit=soft, time_limit=soft + 10)

    async def close(self) -> None:
        for c in {id(self.r): self.r, id(self.blocking): self.blocking}.values():
            with contextlib.suppress(Exception):
                await c.aclose()
