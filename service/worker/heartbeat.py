"""Worker liveness: each pool process (the one holding the engine) announces itself in
Redis; the API reads who is alive, which queues they consume and which models they serve.

    <prefix>:worker:<node>/<pid>  JSON payload, server-side TTL = 3 heartbeats
    <prefix>:workers              set of those ids (expired ones are removed by readers)

The TTL is kept by Redis, so host clocks never matter: a worker that is killed, hangs
up or loses the network disappears from `live_workers` within 3 x SEAM_WORKER_HEARTBEAT_S.
"""
from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

log = logging.getLogger("seam.worker")

MISSED_BEATS = 3


def workers_key(prefix: str) -> str:
    return f"{prefix}:workers"


def worker_key(prefix: str, wid: str) -> str:
    return f"{prefix}:worker:{wid}"


def live_workers(client: Any, prefix: str) -> list[dict]:
    """Payloads of the workers whose heartbeat has not expired (sync redis client)."""
    ids = sorted(v.decode() if isinstance(v, bytes) else v for v in client.smembers(workers_key(prefix)))
    if not ids:
        return []
    raw = client.mget([worker_key(prefix, i) for i in ids])
    out, gone = [], []
    for wid, blob in zip(ids, raw, strict=True):
        if blob is None:
            gone.append(wid)
            continue
        try:
            out.append(json.loads(blob))
        except ValueError:
            gone.append(wid)
    if gone:
        client.srem(workers_key(prefix), *gone)
    return out


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
