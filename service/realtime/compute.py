"""Decode, batch, run and render synchronous requests on an engine.

The one implementation behind /segment, /cam and /cam/refined, whether the engine is
in the API process (one request at a time, inside a concurrency slot) or in a worker
(several requests at once: same-size requests with the same options share an engine
batch). Each request gets a `Reply`: the finished body or a 4xx/5xx error.
"""
from __future__ import annotations

import io
import json
import logging
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from urllib.parse import quote

import numpy as np
from seam.service.batching import batches, cam_batch, segment_batch
from seam.service.core.errors import ApiError
from seam.service.core.registry import MODEL_HEADER
from seam.service.engine.base import InferenceEngine, MemoryBudgetError, SegmentResult
from seam.service.engine.cancel import Abandoned, keep_going
from seam.service.inputs import decode_image
from seam.service.outputs.bodies import cam_json, cams_npz, segment_json, tile_overlays
from seam.service.realtime.messages import Reply, SyncRequest

from seam.common.cam import CamResult
from seam.common.encoders import encode_png_label, encode_png_rgb
from seam.common.image import resize_rgb

log = logging.getLogger("seam.service")


def engine_error(exc: BaseException) -> ApiError | None:
    """The client-facing error for an engine failure; None = a server-side fault (500)."""
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, Abandoned):  # nobody reads this answer; nginx's code for it
        return ApiError(499, "client_closed_request", "the client gave up the request")
    if isinstance(exc, MemoryBudgetError):
        return ApiError(413, "image_too_large", str(exc), details=exc.estimate.as_dict())
    if isinstance(exc, ValueError):  # the engine refuses this input
        return ApiError(422, "unprocessable_image", f"the model cannot process this image: {exc}")
    return None


def error_reply(exc: BaseException) -> Reply:
    err = engine_error(exc)
    if err is None:
        log.error("synchronous request failed", exc_info=(type(exc), exc, exc.__traceback__))
        return Reply(status=500, code="internal_error", message="internal server error")
    return Reply(status=err.status_code, code=err.code, message=err.message, details=err.details,
                 headers=dict(err.headers or {}))


def reply_error(reply: Reply) -> ApiError:
    return ApiError(reply.status, reply.code or "error", reply.message or "error", reply.headers or None,
                    reply.details)


def json_bytes(obj: object) -> bytes:
    # As Starlette's JSONResponse renders, so both paths answer byte-identical bodies.
    return json.dumps(obj, ensure_ascii=False, allow_nan=False, indent=None, separators=(",", ":")).encode("utf-8")


def classes_header(names: Sequence[str], classes: Sequence[int]) -> str:
    return ",".join(quote(names[c], safe="") for c in classes)


def _named(req: SyncRequest, headers: dict[str, str], body: dict | None = None) -> None:
    """Every answer names the model version that computed it (header, and JSON field)."""
    if req.model:
        headers[MODEL_HEADER] = req.model
        if body is not None:
            body["model"] = req.model


def render_segment(req: SyncRequest, seg: SegmentResult, names: Sequence[str]) -> Reply:
    headers = {"X-Seam-Method": seg.method, "X-Seam-Classes": classes_header(names, seg.classes)}
    meta = {"method": seg.method, "model": req.model}
    _named(req, headers)
    if req.fmt == "json":
        body = segment_json(seg, names, req.threshold)
        _named(req, headers, body)
        return Reply(body=json_bytes(body), media_type="application/json", headers=headers, meta=meta)
    if req.fmt == "result":  # for in-process callers of a RemoteModels engine (integrations)
        return Reply(body=segment_result_bytes(seg), media_type="application/octet-stream", headers=headers,
                     meta=meta)
    return Reply(body=encode_png_label(seg.label), media_type="image/png", headers=headers, meta=meta)


def segment_result_bytes(seg: SegmentResult) -> bytes:
    buf = io.BytesIO()
    np.savez_compressed(buf, label=seg.label.astype(np.uint8), classes=np.asarray(seg.classes, np.int64),
                        scores=np.asarray(seg.scores, np.float32), method=np.asarray(seg.method))
    return buf.getvalue()


def segment_result_from(data: bytes) -> SegmentResult:
    with np.load(io.BytesIO(data), allow_pickle=False) as z:
        return SegmentResult(label=z["label"], classes=[int(c) for c in z["classes"]], scores=z["scores"],
                             method=str(z["method"]))


def render_cam(req: SyncRequest, rgb: np.ndarray, res: CamResult, names: Sequence[str]) -> Reply:
    headers = {"X-Seam-Classes": classes_header(names, res.classes)}
    _named(req, headers)
    image_hw = rgb.shape[:2]
    if res.cams.shape[1:] != image_hw:  # size=working: overlays and stats at the maps' size
        headers["X-Seam-Image-Size"] = f"{image_hw[1]}x{image_hw[0]}"
        rgb = resize_rgb(rgb, res.cams.shape[1:])
    if req.fmt == "npz":
        headers["Content-Disposition"] = 'attachment; filename="cams.npz"'
        return Reply(body=cams_npz(res, names, req.dtype, image_hw if req.size == "working" else None),
                     media_type="application/octet-stream", headers=headers)
    if req.fmt == "png":
        return Reply(body=encode_png_rgb(tile_overlays(rgb, res.cams)), media_type="image/png", headers=headers)
    body = cam_json(rgb, res, names, req.refined, req.threshold)
    _named(req, headers, body)
    return Reply(body=json_bytes(body), media_type="application/json", headers=headers)


def run_requests(engine: InferenceEngine, names: Sequence[str], items: Sequence[tuple[SyncRequest, bytes]],
                 max_pixels: int, max_batch: int = 1,
                 wanted: Callable[[Sequence[int]], Sequence[bool]] | None = None) -> list[Reply]:
    """One Reply per (request, image bytes), in order. `wanted(indices)`: whether anyone still
    waits for each of those requests; checked before each engine batch and, through
    `seam.service.engine.cancel`, between the engine's passes (requests given up answer 499)."""
    replies: list[Reply | None] = [None] * len(items)
    decoded: list[tuple[int, SyncRequest, np.ndarray]] = []
    for i, (req, data) in enumerate(items):
        try:
            decoded.append((i, req, decode_image(data, max_pixels)))
        except Exception as exc:  # noqa: BLE001 - 413/415/422 for this request only
            replies[i] = error_reply(exc)
    for group in batches(decoded, lambda t: (t[1].batch_key(), t[2].shape), max_batch):
        if wanted is not None:
            alive = wanted([i for i, _, _ in group])
            for (i, _, _), ok in zip(group, alive, strict=True):
                if not ok:
                    replies[i] = error_reply(Abandoned())
            group = [t for t, ok in zip(group, alive, strict=True) if ok]
            if not group:
                continue
        idx = [i for i, _, _ in group]
        guard = nullcontext() if wanted is None else keep_going(lambda idx=idx: any(wanted(idx)))
        req0 = group[0][1]
        rgbs = [rgb for _, _, rgb in group]
        labels = [req.labels for _, req, _ in group]
        results: Sequence[object]
        with guard:
            if req0.op == "segment":
                results = segment_batch(engine, rgbs, labels, method=req0.method, threshold=req0.threshold,
                                        max_side=req0.max_side)
            else:
                results = cam_batch(engine, rgbs, labels, refined=req0.refined, max_side=req0.max_side,
                                    size=req0.size)
        for (i, req, rgb), res in zip(group, results, strict=True):
            try:
                if isinstance(res, Exception):
                    raise res
                replies[i] = (render_segment(req, res, names) if req.op == "segment"  # type: ignore[arg-type]
                              else render_cam(req, rgb, res, names))  # type: ignore[arg-type]
            except Exception as exc:  # noqa: BLE001
                replies[i] = error_reply(exc)
    return [r if r is not None else Reply(status=500, code="internal_error", message="no result") for r in replies]
