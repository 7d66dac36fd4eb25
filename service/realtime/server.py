"""The worker side of synchronous requests: take pending requests, batch, reply.

Called by the realtime Celery task (each message on the realtime queue wakes a worker
up; whichever worker is free first takes every pending request, up to max_batch per
round) and between the batches of a job chunk, so a long chunk does not hold
synchronous requests back. Requests are claimed with LPOP, so each runs once; one
whose API gave up (its key expired or was deleted) is skipped. The request key stays
(without the image bytes) while the worker computes: the API deletes it when its client
hangs up or its deadline passes, and the worker checks it before each engine batch and
between the engine's passes (`seam.service.engine.cancel`), so an abandoned request stops
costing the worker within one pass.

Dynamic batching: after the first request is taken, more are awaited for up to
SEAM_BATCH_WINDOW_MS (or until max_batch are in hand); same-size requests with the
same options then run as one engine batch.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

from pydantic import ValidationError
from seam.service.engine.base import InferenceEngine
from seam.service.realtime.compute import error_reply, run_requests
from seam.service.realtime.messages import REALTIME_BUDGET_S, REPLY_TTL_S, Keys, Reply, SyncRequest

log = logging.getLogger("seam.worker")


class RealtimeServer:
    def __init__(self, client: Any, prefix: str, engine: Callable[..., Any], node: str, max_pixels: int,
                 max_batch: int, window_s: float, budget_s: float = REALTIME_BUDGET_S) -> None:
        self.r = client  # sync redis client, bytes responses
        self.keys = Keys(prefix)
        # engine() -> the engine; engine("NAME:VERSION") -> that version's (a registry's ServedModel)
        self.engine = engine
        self.node = node
        self.max_pixels = max_pixels
        self.max_batch = max_batch
        self.window_s = window_s
        self.budget_s = budget_s  # one call serves at most this long, then lets Celery run other work
        self.batch_sizes: list[int] = []  # engine-side sizes of the rounds served (tests, logs)

    def take(self, window_s: float) -> list[str]:
        """Up to max_batch pending request ids: what is there now, plus what arrives within the window."""
        ids = self._lpop(self.max_batch)
        if not ids:
            return []
        end = time.monotonic() + window_s
        while len(ids) < self.max_batch and (left := end - time.monotonic()) > 0.0005:
            got = self.r.blpop([self.keys.pending], timeout=left)
            if got is None:
                break
            ids.append(_s(got[1]))
            ids += self._lpop(self.max_batch - len(ids))
        return ids

    def _lpop(self, n: int) -> list[str]:
        if n <= 0:
            return []
        got = self.r.lpop(self.keys.pending, n)
        return [_s(v) for v in got or []]

    def serve(self, window_s: float | None = None) -> int:
        """Serve pending requests until none is left (or the time budget is spent); how many."""
        window = self.window_s if window_s is None else window_s
        start = time.monotonic()
        served = 0
        while time.monotonic() - start < self.budget_s:
            ids = self.take(window)
            if not ids:
                break
            served += self.run(ids)
        return served

    def wanted(self, ids: Sequence[str]) -> list[bool]:
        """Whether the API still waits for each of these requests (their keys exist)."""
        with self.r.pipeline(transaction=False) as pipe:
            for rid in ids:
                pipe.exists(self.keys.request(rid))
            return [bool(n) for n in pipe.execute()]

    def run(self, ids: Sequence[str]) -> int:
        with self.r.pipeline(transaction=False) as pipe:
            for rid in ids:
                pipe.hgetall(self.keys.request(rid))
                pipe.hdel(self.keys.request(rid), "image")  # the bytes are in hand; the key stays as "still wanted"
            raw = pipe.execute()[0::2]
        live: list[tuple[str, SyncRequest, bytes]] = []
        early: dict[str, Reply] = {}
        for rid, h in zip(ids, raw, strict=True):
            if not h:  # the API gave up on it (deadline): nobody waits for the answer
                continue
            h = {_s(k): v for k, v in h.items()}
            try:
                live.append((rid, SyncRequest.model_validate_json(h["params"]), h["image"]))
            except (KeyError, ValidationError) as exc:
                early[rid] = Reply(status=400, code="bad_request", message=f"malformed request: {exc}")
        replies = dict(early)
        if live:
            by_model: dict[str | None, list[tuple[str, SyncRequest, bytes]]] = {}
            for item in live:  # each model version computes its own requests
                by_model.setdefault(item[1].model, []).append(item)
            for model, group in by_model.items():
                out = self._compute(model, group)
                for (rid, _, _), rep in zip(group, out, strict=True):
                    replies[rid] = rep
            self.batch_sizes.append(len(live))
        with self.r.pipeline(transaction=False) as pipe:
            for rid, rep in replies.items():
                pipe.delete(self.keys.request(rid))
                if rep.status == 499:  # nobody waits for it
                    continue
                rep.headers.setdefault("X-Seam-Worker", self.node)
                pipe.rpush(self.keys.reply(rid), rep.encode())
                pipe.expire(self.keys.reply(rid), REPLY_TTL_S)
            pipe.execute()
        if live:
            log.info("served %d synchronous request(s) in one round", len(live))
        return len(replies)


    def _engine_for(self, model: str | None) -> tuple[InferenceEngine, str | None]:
        """The engine of `model` (a registry's ServedModel names its version) or the only one."""
        got = self.engine(model) if model is not None else self.engine()
        if hasattr(got, "engine") and hasattr(got, "ref"):
            return got.engine, got.ref
        if model is None:  # an unversioned engine: NAME:1, as the registry names one (core/registry.py)
            infos = got.models()
            return got, f"{infos[0].name}:1" if infos else None
        return got, model

    def _compute(self, model: str | None, group: list[tuple[str, SyncRequest, bytes]]) -> list[Reply]:
        try:
            engine, ref = self._engine_for(model)
            for _, req, _ in group:
                req.model = ref  # the answers name the version that computes them
            names = engine.foreground_classes()
            return run_requests(engine, names, [(req, data) for _, req, data in group], self.max_pixels,
                                self.max_batch, wanted=lambda idx: self.wanted([group[i][0] for i in idx]))
        except Exception as exc:  # noqa: BLE001 - e.g. the engine failed to load: answer, do not hang
            err = error_reply(exc)
            if err.status == 500:
                err = Reply(status=503, code="unavailable", message=f"the worker cannot run the model: {exc}",
                            headers={"Retry-After": "10"})
            return [err] * len(group)


def _s(v: object) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)
