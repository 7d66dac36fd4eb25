"""Worker liveness records: each pool process (the one holding the engine) announces itself in
Redis (seam.service.worker.heartbeat writes the beats); the API and the redelivery sweep read
who is alive, which queues they consume and which models they serve.

    <prefix>:worker:<node>/<pid>  JSON payload, server-side TTL = 3 heartbeats
    <prefix>:workers              set of those ids (expired ones are removed by readers)

The TTL is kept by Redis, so host clocks never matter: a worker that is killed, hangs
up or loses the network disappears from `live_workers` within 3 x SEAM_WORKER_HEARTBEAT_S.
"""
from __future__ import annotations

import json
from typing import Any

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
