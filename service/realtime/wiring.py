"""Broker mode in the API process: the cached fleet view (refreshed every heartbeat
period in the background), readiness per queue, the models advertised by the workers
and, on the worker path, the client handing synchronous requests to them."""
from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from seam.service.core.config import Settings
from seam.service.core.engine_holder import EngineHolder
from seam.service.core.redisconn import async_redis, sync_redis
from seam.service.realtime.client import RealtimeClient
from seam.service.realtime.fleet import FleetView, RemoteModels
from starlette.concurrency import run_in_threadpool

log = logging.getLogger("seam.service")


class BrokerSide:
    def __init__(self, settings: Settings, holder: EngineHolder, celery: Any = None) -> None:
        self.settings = settings
        self.holder = holder
        self.period_s = float(settings.worker_heartbeat_s)  # the cache period of the fleet view
        url = settings.broker_url or ""
        self._sync = sync_redis(url)
        queues = [settings.queue_name]
        if settings.sync_on_workers:
            queues.insert(0, settings.realtime_queue_name)
        self.fleet = FleetView(self._sync, settings.key_prefix, queues)
        self.client: RealtimeClient | None = None
        if settings.sync_on_workers:
            if celery is None:
                from seam.service.core.broker import create_celery

                celery = create_celery(settings)
            # Two clients: commands fail fast on a dead broker; the reply's BLPOP blocks up to the deadline.
            self.client = RealtimeClient(settings, self.fleet, celery, async_redis(url),
                                         async_redis(url, longest_block_s=settings.request_timeout_s))
        self._task: asyncio.Task | None = None

    def refresh(self) -> None:
        self.fleet.refresh()
        if self.client is None:  # the API has its own engine
            return
        remote = self.fleet.models()
        current = self.holder.engine
        if remote is not None:
            remote.submit = self.client.submit
        if remote is not None and (not isinstance(current, RemoteModels) or not current.same_models(remote)):
            self.holder.set(remote, warm=False)  # type: ignore[arg-type]  (metadata only: no inference here)
            self.holder.loading = False

    async def start(self) -> None:
        if self.client is not None and self.holder.engine is None:
            self.holder.loading = True  # until a worker has announced its models
        await run_in_threadpool(self.refresh)
        self._task = asyncio.create_task(self._loop())

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.period_s)
            try:
                await run_in_threadpool(self.refresh)
            except Exception:  # noqa: BLE001
                log.exception("refreshing the worker view failed")

    def problem(self) -> str | None:
        return self.fleet.problem()

    def detail(self) -> str:
        return self.fleet.detail()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        if self.client is not None:
            await self.client.close()
        with contextlib.suppress(Exception):
            self._sync.close()
