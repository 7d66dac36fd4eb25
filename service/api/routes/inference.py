"""Synchronous inference on one uploaded image: /segment, /cam, /cam/refined.

Computed by this process's engine (embedded mode, SEAM_SYNC_INFERENCE=api) or by the
workers over the realtime queue (broker mode); `seam.service.realtime.compute` renders the
answer either way, so both paths give byte-identical responses."""
from __future__ import annotations

import time
from typing import Annotated, Literal

from fastapi import APIRouter, File, Form, Request, UploadFile
from fastapi.responses import Response
from seam.service.api.deps import HolderDep, LimiterDep, MetricsDep, SettingsDep
from seam.service.core.engine_holder import resolve_method
from seam.service.core.errors import ApiError
from seam.service.core.limits import run_limited
from seam.service.core.registry import ModelRegistry, ServedModel, served_by
from seam.service.engine.base import InferenceEngine, MemoryBudgetError
from seam.service.inputs import check_pixels, image_size, not_an_image, parse_labels, sniff_image
from seam.service.realtime.compute import engine_error, reply_error, run_requests
from seam.service.realtime.messages import Reply, SyncRequest
from seam.service.schemas import (
    MODEL_REF_HELP,
    MODEL_REF_PATTERN,
    CamResponse,
    ErrorResponse,
    MethodName,
    SegmentResponse,
    method_help,
)
from starlette.concurrency import run_in_threadpool

router = APIRouter(tags=["inference"])

_ERRORS = {code: {"model": ErrorResponse, "description": desc} for code, desc in (
    (401, "Missing or invalid API key."), (404, "No such model or model version."),
    (413, "Upload or image too large."),
    (415, "Not an image (by content)."), (422, "Undecodable image, unknown class, bad field."),
    (429, "Too many requests in flight or queued; see Retry-After."),
    (503, "Not ready, no live worker, or no slot freed in time."), (504, "No worker answered within the deadline."))}
_BINARY = {"schema": {"type": "string", "format": "binary"}}

ImageFile = Annotated[UploadFile, File(description="The image (PNG, JPEG, GIF, BMP, TIFF, WebP; sniffed by content).")]
LabelsField = Annotated[str | None, Form(max_length=10_000, description=(
    "Image-level labels: class names or foreground indices, comma separated. Absent: the model predicts them."))]
MethodField = Annotated[MethodName | None, Form(json_schema_extra=method_help)]
ModelField = Annotated[str | None, Form(max_length=200, pattern=MODEL_REF_PATTERN, description=(
    MODEL_REF_HELP + " The answer names the version that computed it (X-Seam-Model, and `model` in JSON)."))]
ThresholdField = Annotated[float | None, Form(ge=0.0, le=1.0, description="Background threshold in [0, 1].")]
MaxSideField = Annotated[int | None, Form(ge=8, le=16384, description=(
    "Long side the image is resized to (when longer) before the multi-scale passes; results are always at the "
    "image's size. Default: the server's SEAM_MAX_SIDE, else the model's working side (GET /models). Larger "
    "values cost memory with the square of the side: over the engine's budget the answer is 413 with the "
    "largest max_side that fits."))]


async def _read(image: UploadFile) -> bytes:
    return await image.read()


def _precheck(data: bytes, max_pixels: int) -> tuple[int, int]:
    """What the header tells (not an image, too many pixels), before a worker is bothered;
    the image's (width, height)."""
    if not data:
        raise ApiError(422, "invalid_image", "the image file is empty")
    if sniff_image(data[:16]) is None:
        raise not_an_image(data[:16])
    w, h = image_size(data)
    check_pixels(w, h, max_pixels)
    return w, h


def _engine_method(req: SyncRequest) -> str:
    """The method the engine runs for `req` (the metrics label, the memory estimate's method)."""
    if req.op == "segment":
        return req.method or ""
    return "pcm" if req.refined else "cam"


async def _run(request: Request, engine: InferenceEngine, settings, limiter, metrics, op: str,
               req: SyncRequest, data: bytes) -> Response:
    method = _engine_method(req)
    side = getattr(request.app.state, "broker_side", None)
    if side is not None and side.client is not None:  # the workers compute it
        _precheck(data, settings.max_pixels)
        t0 = time.perf_counter()
        try:
            reply = await side.client.submit(req, data, gone=request.is_disconnected)
        except ApiError as exc:
            if exc.status_code in (429, 503, 504):
                metrics.rejected.labels({429: "busy", 503: "no_worker", 504: "timeout"}[exc.status_code]).inc()
            raise
        finally:
            metrics.inference_latency.labels(op, method).observe(time.perf_counter() - t0)
    else:
        _admit(engine, req, data, settings.max_pixels)
        names = engine.foreground_classes()

        def work() -> Reply:
            return run_requests(engine, names, [(req, data)], settings.max_pixels)[0]

        reply = await run_limited(limiter, metrics, op, method, work)
    if reply.status >= 400:
        raise reply_error(reply)
    return Response(reply.body, media_type=reply.media_type, headers=reply.headers)


def _admit(engine: InferenceEngine, req: SyncRequest, data: bytes, max_pixels: int) -> None:
    """413 from the header's size alone, before anything is decoded or queued for the engine."""
    estimate = getattr(engine, "estimate", None)
    if estimate is None:
        return
    w, h = _precheck(data, max_pixels)
    try:
        est = estimate((h, w), method=_engine_method(req), labels=req.labels, max_side=req.max_side)
    except ValueError as exc:  # e.g. max_side out of the model's range
        raise ApiError(422, "unprocessable_image", f"the model cannot process this image: {exc}") from None
    if not est.fits:
        raise engine_error(MemoryBudgetError(est))


@router.post(
    "/segment", response_model=None, summary="Segment one image.",
    description="Label map of one image. `format=png`: a VOC-palette PNG the size of the input (EXIF orientation "
                "applied; value c+1 = foreground class c, 0 = background). `format=json`: classes with scores, "
                "size and COCO RLE masks.",
    responses={200: {"model": SegmentResponse, "content": {"image/png": _BINARY},
                     "description": "PNG label map or JSON."}, **_ERRORS})
async def segment(
    request: Request, holder: HolderDep, settings: SettingsDep, limiter: LimiterDep, metrics: MetricsDep,
    image: ImageFile, labels: LabelsField = None, method: MethodField = None, threshold: ThresholdField = None,
    fmt: Annotated[Literal["png", "json"], Form(alias="format", description="png or json.")] = "png",
    max_side: MaxSideField = None, model: ModelField = None,
) -> Response:
    served = await _acquire(holder, model)
    engine = served.engine
    data = await _read(image)
    label_idx = parse_labels(labels, engine.foreground_classes())
    method_name = resolve_method(engine, method)
    req = SyncRequest(op="segment", fmt=fmt, labels=label_idx, method=method_name, threshold=threshold,
                      max_side=max_side, model=_forwarded(holder, served, model))
    resp = await _run(request, engine, settings, limiter, metrics, "segment", req, data)
    metrics.images_labelled.labels("segment").inc()
    return resp


async def _acquire(holder, model: str | None) -> ServedModel:
    return await run_in_threadpool(served_by, holder, model)


def _forwarded(holder, served: ServedModel, model: str | None) -> str | None:
    return holder.forwarded_ref(served, model) if isinstance(holder, ModelRegistry) else served.ref


async def _cam(request: Request, holder, settings, limiter, metrics, image: UploadFile,
               labels: str | None, threshold: float | None, fmt: str, refined: bool,
               max_side: int | None = None, size: str = "image", dtype: str = "float32",
               model: str | None = None) -> Response:
    served = await _acquire(holder, model)
    engine = served.engine
    data = await _read(image)
    label_idx = parse_labels(labels, engine.foreground_classes())
    req = SyncRequest(op="cam", fmt=fmt, labels=label_idx, threshold=threshold, refined=refined, max_side=max_side,
                      size=size, dtype=dtype, model=_forwarded(holder, served, model))
    resp = await _run(request, engine, settings, limiter, metrics, "cam_refined" if refined else "cam", req, data)
    metrics.images_labelled.labels("cam/refined" if refined else "cam").inc()
    return resp


_CAM_DESC = ("Every map lies in [0, 1]. Without `labels`, the classes are those the model predicts (score >= its "
             "class threshold, GET /models) whose map is not all zero. "
             "`format=npz`: `classes` (K,), `cams` (K, H, W) C-ordered in `dtype`, `class_names` (K,), plus "
             "`image_size` [h, w] with `size=working`; loads with allow_pickle=False. `format=png`: heat-map "
             "overlays, one tile per class side by side (X-Seam-Classes names them in order). `format=json`: "
             "per-class min/max/mean, area above the threshold and base64 PNG overlays. `size=working` returns the "
             "maps at the size the passes ran at (no upsampling; X-Seam-Image-Size gives the image's size when it "
             "differs), which is what a client drawing them on screen needs.")
_CAM_RESPONSES = {200: {"model": CamResponse, "description": "npz, PNG or JSON.",
                        "content": {"image/png": _BINARY, "application/octet-stream": _BINARY}}, **_ERRORS}
CamFormat = Annotated[Literal["npz", "png", "json"], Form(alias="format", description="npz, png or json.")]
CamSize = Annotated[Literal["image", "working"], Form(description=(
    "image: maps at the image's size; working: at the size the model's passes ran at (the image's long side "
    "capped at max_side), far smaller for photos."))]
CamDtype = Annotated[Literal["float32", "float16", "uint8"], Form(description=(
    "npz only: float32, float16, or uint8 = round(255 * value) (divide by 255 to read)."))]


@router.post("/cam", response_model=None, summary="Raw class activation maps.", description=_CAM_DESC,
             responses=_CAM_RESPONSES)
async def cam(request: Request, holder: HolderDep, settings: SettingsDep, limiter: LimiterDep, metrics: MetricsDep,
              image: ImageFile, labels: LabelsField = None, threshold: ThresholdField = None,
              fmt: CamFormat = "npz", max_side: MaxSideField = None, size: CamSize = "image",
              dtype: CamDtype = "float32", model: ModelField = None) -> Response:
    return await _cam(request, holder, settings, limiter, metrics, image, labels, threshold, fmt, refined=False,
                      max_side=max_side, size=size, dtype=dtype, model=model)


@router.post("/cam/refined", response_model=None, summary="PCM-refined class activation maps.",
             description=_CAM_DESC, responses=_CAM_RESPONSES)
async def cam_refined(request: Request, holder: HolderDep, settings: SettingsDep, limiter: LimiterDep,
                      metrics: MetricsDep, image: ImageFile, labels: LabelsField = None,
                      threshold: ThresholdField = None, fmt: CamFormat = "npz",
                      max_side: MaxSideField = None, size: CamSize = "image",
                      dtype: CamDtype = "float32", model: ModelField = None) -> Response:
    return await _cam(request, holder, settings, limiter, metrics, image, labels, threshold, fmt, refined=True,
                      max_side=max_side, size=size, dtype=dtype, model=model)
