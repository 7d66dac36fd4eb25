"""The heartbeat thread of a worker pool process: the writer of the liveness records
(their layout and readers: seam.service.core.liveness)."""
from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

from seam.service.core.liveness import MISSED_BEATS, worker_key, workers_key

log = logging.getLogger("seam.worker")


class WorkerHeartbeat:
    """A daemon thread refreshing this process's payload every `interval_s`.

    payload(): the current state (queues, engine readiness, models), re-read at every
    beat so that a finished engine load shows up at the next one. The thread stops
    itself when the parent process changes (the Celery main process died and this pool
    process was orphaned: it no longer receives tasks, so it must not look alive).
    """

    def __init__(self, client: Any, prefix: str, node: str, interval_s: float,
                 payload: Callable[[], dict]) -> None:
        self.client = client
        self.prefix = prefix
        self.wid = f"{node}/{os.getpid()}"
        self.node = node
        self.interval_s = interval_s
        self.payload = payload
        self._stop = threading.Event()
        self._ppid = os.getppid()
        self._thread: threading.Thread | None = None

    def beat(self) -> None:
        body = {"id": self.wid, "node": self.node, "pid": os.getpid(), "host": socket.gethostname(),
                "ts": time.time(), **self.payload()}
        ttl_ms = int(MISSED_BEATS * self.interval_s * 1000)
        with self.client.pipeline(transaction=True) as pipe:
            pipe.set(worker_key(self.prefix, self.wid), json.dumps(body), px=ttl_ms)
            pipe.sadd(workers_key(self.prefix), self.wid)
            pipe.execute()

    def _run(self) -> None:
        while not self._stop.is_set():
            if os.getppid() != self._ppid:
                log.warning("worker main process is gone; stopping the heartbeat of %s", self.wid)
                return
            try:
                self.beat()
            except Exception as exc:  # noqa: BLE001 - Redis down: the next beat retries
                log.warning("heartbeat failed: %s", exc)
            self._stop.wait(self.interval_s)

    def start(self) -> WorkerHeartbeat:
        self._thread = threading.Thread(target=self._run, name="seam-heartbeat", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop beating and remove this worker at once (a clean shutdown need not wait for the TTL)."""
        self._stop.set()
        try:
            self.client.delete(worker_key(self.prefix, self.wid))
            self.client.srem(workers_key(self.prefix), self.wid)
        except Exception:  # noqa: BLE001
            pass
