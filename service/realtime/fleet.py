"""The API's view of the live workers (broker mode), refreshed every heartbeat period.

Readiness and the synchronous endpoints read the cached view, never Redis, so a dead
broker or a large fleet costs no request latency. With the worker path the API loads
no model: class names, methods and model identities come from the workers' heartbeats
(`RemoteModels`), which is all the API itself needs (label parsing, method checks,
/models, the class names stored with each job).
"""
from __future__ import annotations

import io
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image
from seam.service.core.liveness import live_workers
from seam.service.engine.base import ModelInfo, SegmentResult
from seam.service.realtime.messages import Reply, SyncRequest

log = logging.getLogger("seam.service")


class RemoteModels:
    """InferenceEngine for the API process on the worker path: the metadata a worker
    advertised, and `segment` computed by the workers (for in-process callers such as the
    labelling-tool integrations; called from a worker thread of the event loop, as
    `run_in_threadpool` runs it). The HTTP endpoints use the realtime client directly."""

    # what of a worker's heartbeat payload this engine serves (the rest, e.g. its timestamp, changes every beat)
    ADVERTISED = ("classes", "methods", "models")

    def __init__(self, info: dict, submit: Callable[[SyncRequest, bytes], Awaitable[Reply]] | None = None,
                 model: str | None = None) -> None:
        self.info = info
        self.submit = submit
        self.model = model  # NAME:VERSION the workers run for `segment` (None: their default)

    def for_model(self, ref: str, classes: Sequence[str] | None = None,
                  methods: Sequence[str] | None = None) -> RemoteModels:
        """The same workers, asked to compute with the model version `ref` (registry.served_by);
        `classes` and `methods`: that version's (from its manifests), in place of the ones the
        workers advertise for their default model."""
        info = dict(self.info)
        if classes is not None:
            info["classes"] = list(classes)
        if methods is not None:
            info["methods"] = list(methods)
        return RemoteModels(info, self.submit, ref)

    def same_models(self, other: RemoteModels) -> bool:
        return all(self.info.get(k) == other.info.get(k) for k in self.ADVERTISED)

    def models(self) -> list[ModelInfo]:
        return [ModelInfo(name=m.get("name", "?"), kind=m.get("kind", "?"), backbone=m.get("backbone", "?"),
                          classes=list(m.get("classes") or []), provider=m.get("provider", "?"),
                          manifest={"onnx": {"sha256": m.get("sha256")}} if m.get("sha256") else {},
                          description=m.get("description"), cls_threshold=m.get("cls_threshold"),
                          bg_threshold=m.get("bg_threshold"))
                for m in self.info.get("models") or []]

    def foreground_classes(self) -> list[str]:
        return list(self.info.get("classes") or [])

    def methods(self) -> list[str]:
        return list(self.info.get("methods") or [])

    def segment(self, rgb: np.ndarray, labels: Sequence[int] | None = None, method: str | None = None,
                threshold: float | None = None, crf: bool = False, max_side: int | None = None) -> SegmentResult:
        from anyio import from_thread
        from seam.service.realtime.compute import reply_error, segment_result_from

        if self.submit is None:
            raise RuntimeError("this API process has no engine: inference runs on the workers")
        buf = io.BytesIO()
        Image.fromarray(np.asarray(rgb, np.uint8)).save(buf, format="PNG", compress_level=1)  # lossless
        req = SyncRequest(op="segment", fmt="result", labels=None if labels is None else [int(c) for c in labels],
                          method=method, threshold=threshold, max_side=max_side, model=self.model)
        reply = from_thread.run(self.submit, req, buf.getvalue())
        if reply.status >= 400:
            raise reply_error(reply)
        return segment_result_from(reply.body)

    def _no_inference(self, *_: Any, **__: Any) -> Any:
        raise RuntimeError("this API process has no engine: inference runs on the workers")

    cam = segment_many = cam_many = _no_inference


@dataclass
class FleetSnapshot:
    workers: list[dict] = field(default_factory=list)
    error: str | None = None
    at: float = 0.0

    def consumers(self, queue: str) -> list[str]:
        return sorted({w.get("node", "?") for w in self.workers if w.get("ready") and queue in (w.get("queues") or [])})


class FleetView:
    def __init__(self, client: Any, prefix: str, queues: list[str]) -> None:
        self.client = client
        self.prefix = prefix
        self.queues = queues  # the queues this API needs a consumer for
        self.snapshot = FleetSnapshot(error="not checked yet")

    def refresh(self) -> FleetSnapshot:
        try:
            snap = FleetSnapshot(workers=live_workers(self.client, self.prefix), at=time.time())
        except Exception as exc:  # noqa: BLE001 - reported by readiness
            snap = FleetSnapshot(error=f"cannot read worker heartbeats: {type(exc).__name__}", at=time.time())
        self.snapshot = snap
        return snap

    def models(self) -> RemoteModels | None:
        """The models of the most recently started ready worker (one label set per deployment)."""
        ready = [w for w in self.snapshot.workers if w.get("ready") and w.get("classes")]
        if not ready:
            return None
        return RemoteModels(max(ready, key=lambda w: w.get("started_at", 0.0)))

    def problem(self, queue: str | None = None) -> str | None:
        """None when every needed queue (or `queue`) has a live worker with a loaded engine."""
        snap = self.snapshot
        if snap.error:
            return snap.error
        missing = [q for q in ([queue] if queue else self.queues) if not snap.consumers(q)]
        if not missing:
            return None
        loading = [w.get("node", "?") for w in snap.workers if not w.get("ready")]
        extra = f" (loading or failed: {', '.join(sorted(set(loading)))})" if loading else ""
        return f"no live worker consumes {', '.join(missing)}{extra}"

    def detail(self) -> str:
        snap = self.snapshot
        return "; ".join(f"{q}: {', '.join(snap.consumers(q)) or 'none'}" for q in self.queues)
