"""Getting the chunks of a dead worker host back to the queue before the Redis
visibility timeout.

With `acks_late`, a chunk whose worker *process* dies is re-queued at once by the
Celery main process (`task_reject_on_worker_lost`). When the whole host (or the main
process) dies, nobody rejects it: kombu's Redis transport restores the unacknowledged
message only once it is `visibility_timeout` old (default 2 x 600 + 60 s = 21 min).

Here, each worker records the chunks it has received in `<prefix>:inflight`
(task id -> node, time), and the API process (`requeue_orphans`, every
SEAM_WORKER_HEARTBEAT_S) restores, through kombu's own `QoS.restore_by_tag`, the
unacknowledged chunk messages of nodes that no longer have a live heartbeat
(`seam.service.core.liveness`, expiring after 3 beats). The chunk runs again on another
worker; outputs already written are kept and skipped (process_chunk is idempotent).
A node that was only cut off and comes back may finish the chunk too: the result is
the same files, and the delivery count of that chunk goes up by one.
"""
from __future__ import annotations

import json
import logging
import time
from typing import Any

from celery.signals import task_postrun, task_received
from seam.service.core.liveness import MISSED_BEATS, live_workers
from seam.service.jobs.dispatch import TASK_NAME as CHUNK_TASK

log = logging.getLogger("seam.worker")


def inflight_key(prefix: str) -> str:
    return f"{prefix}:inflight"


def _s(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


@task_received.connect
def _on_received(request: Any = None, **_: Any) -> None:
    """Main worker process: a chunk message is now held (prefetched or running) by this node."""
    if request is None or getattr(request, "name", None) != CHUNK_TASK:
        return
    try:
        from seam.service.core.config import get_settings
        from seam.service.worker.tasks import shared_redis

        s = get_settings()
        shared_redis().hset(inflight_key(s.key_prefix), request.id,
                      json.dumps({"node": request.hostname, "ts": time.time()}))
    except Exception:  # noqa: BLE001 - bookkeeping must never lose a task
        log.warning("could not record chunk %s as in flight", getattr(request, "id", "?"), exc_info=True)


@task_postrun.connect
def _on_postrun(task_id: str | None = None, task: Any = None, **_: Any) -> None:
    if task_id is None or getattr(task, "name", None) != CHUNK_TASK:
        return
    try:
        from seam.service.core.config import get_settings
        from seam.service.worker.tasks import shared_redis

        shared_redis().hdel(inflight_key(get_settings().key_prefix), task_id)
    except Exception:  # noqa: BLE001
        pass


def requeue_orphans(celery_app: Any, client: Any, prefix: str, heartbeat_s: float,
                    now: float | None = None) -> list[str]:
    """Restore the unacknowledged chunk messages held by nodes without a live heartbeat;
    returns their task ids. Entries younger than 3 heartbeats are left alone (a worker
    that has just started may not have beaten yet)."""
    now = time.time() if now is None else now
    grace = MISSED_BEATS * heartbeat_s
    inflight = {_s(k): json.loads(_s(v)) for k, v in client.hgetall(inflight_key(prefix)).items()}
    if not inflight:
        return []
    live_nodes = {w.get("node") for w in live_workers(client, prefix)}
    requeued: list[str] = []
    with celery_app.connection_for_write() as conn:
        channel = conn.default_channel
        tags: dict[str, str] = {}
        for tag, payload in channel.client.hgetall(channel.unacked_key).items():
            try:
                message = json.loads(_s(payload))[0]
                tags[message["headers"]["id"]] = _s(tag)
            except (ValueError, KeyError, IndexError, TypeError):
                continue
        for task_id, info in inflight.items():
            old = now - float(info.get("ts", now)) > grace
            if task_id not in tags:  # acknowledged (done) or never acked-late: forget it
                if old:
                    client.hdel(inflight_key(prefix), task_id)
                continue
            if not old or info.get("node") in live_nodes:
                continue
            channel.qos.restore_by_tag(tags[task_id], leftmost=True)
            client.hdel(inflight_key(prefix), task_id)
            requeued.append(task_id)
            log.warning("re-queued chunk task %s: its worker %s stopped sending heartbeats", task_id,
                        info.get("node"))
    return requeued
