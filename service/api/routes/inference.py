"""Synchronous inference on one uploaded image: /segment, /cam, /cam/refined."""
from __future__ import annotations

import time
from typing import Annotated, Literal
from urllib.parse import quote

from fastapi import APIRouter, File, Form, UploadFile
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from service import encoding as enc
from service.api.deps import EngineDep, LimiterDep, MetricsDep, SettingsDep
from service.core.errors import ApiError
from service.engine.base import InferenceEngine
from service.inputs import decode_image, parse_labels
from service.predict import cam_json, segment_json
from service.schemas import CamResponse, ErrorResponse, MethodName, SegmentResponse

router = APIRouter(tags=["inference"])

_ERRORS = {code: {"model": ErrorResponse, "description": desc} for code, desc in (
    (401, "Missing or invalid API key."), (413, "Upload or image too large."),
    (415, "Not an image (by content)."), (422, "Undecodable image, unknown class, bad field."),
    (429, "Too many requests in flight; see Retry-After."), (503, "Not ready, or no slot freed in time."))}
_BINARY = {"schema": {"type": "string", "format": "binary"}}

ImageFile = Annotated[UploadFile, File(description="The image (PNG, JPEG, GIF, BMP, TIFF, WebP; sniffed by content).")]
LabelsField = Annotated[str | None, Form(max_length=10_000, description=(
    "Image-level labels: class names or foreground indices, comma separated. Absent: the model predicts them."))]
MethodField = Annotated[MethodName | None, Form(description="cam, pcm, rw or deeplab; default: the best available.")]
ThresholdField = Annotated[float | None, Form(ge=0.0, le=1.0, description="Background threshold in [0, 1].")]


def resolve_method(method: str | None, engine: InferenceEngine) -> str:
    available = engine.methods()
    if not available:
        raise ApiError(503, "not_ready", "the loaded model repository offers no segmentation method")
    if method is None:
        return available[0]
    if method not in available:
        raise ApiError(422, "method_unavailable",
                       f"method {method!r} is not available with the loaded models; available: {', '.join(available)}")
    return method


async def _read(image: UploadFile) -> bytes:
    return await image.read()


async def _compute(limiter, metrics, op: str, method: str, fn, *args):
    """Run `fn(*args)` in a worker thread inside a bounded in-flight slot."""
    try:
        async with limiter.slot():
            t0 = time.perf_counter()
            try:
                return await run_in_threadpool(fn, *args)
            finally:
                metrics.inference_latency.labels(op, method).observe(time.perf_counter() - t0)
    except ApiError as exc:
        if exc.status_code in (429, 503) and exc.code in ("too_many_requests", "unavailable"):
            metrics.rejected.labels("busy" if exc.status_code == 429 else "wait_timeout").inc()
        raise


def _engine_call(fn, *args, **kwargs):
    try:
        return fn(*args, **kwargs)
    except ValueError as exc:  # the engine refuses this input
        raise ApiError(422, "unprocessable_image", f"the model cannot process this image: {exc}") from None


def _classes_header(names: list[str], classes: list[int]) -> str:
    return ",".join(quote(names[c], safe="") for c in classes)


@router.post(
    "/segment", response_model=None, summary="Segment one image.",
    description="Label map of one image. `format=png`: a VOC-palette PNG the size of the input (EXIF orientation "
                "applied; value c+1 = foreground class c, 0 = background). `format=json`: classes with scores, "
                "size and COCO RLE masks.",
    responses={200: {"model": SegmentResponse, "content": {"image/png": _BINARY},
                     "description": "PNG label map or JSON."}, **_ERRORS})
async def segment(
    engine: EngineDep, settings: SettingsDep, limiter: LimiterDep, metrics: MetricsDep,
    image: ImageFile, labels: LabelsField = None, method: MethodField = None, threshold: ThresholdField = None,
    fmt: Annotated[Literal["png", "json"], Form(alias="format", description="png or json.")] = "png",
) -> Response:
    data = await _read(image)
    names = engine.foreground_classes()
    label_idx = parse_labels(labels, names)
    method_name = resolve_method(method, engine)

    def work():
        rgb = decode_image(data, settings.max_pixels)
        seg = _engine_call(engine.segment, rgb, label_idx, method=method_name, threshold=threshold)
        if fmt == "json":
            return segment_json(seg, names, threshold), seg
        return enc.png_label(seg.label), seg

    body, seg = await _compute(limiter, metrics, "segment", method_name, work)
    metrics.images_labelled.labels("segment").inc()
    headers = {"X-Seam-Method": seg.method, "X-Seam-Classes": _classes_header(names, seg.classes)}
    if fmt == "json":
        return JSONResponse(body, headers=headers)
    return Response(body, media_type="image/png", headers=headers)


async def _cam(engine: InferenceEngine, settings, limiter, metrics, image: UploadFile, labels: str | None,
               threshold: float | None, fmt: str, refined: bool) -> Response:
    data = await _read(image)
    names = engine.foreground_classes()
    label_idx = parse_labels(labels, names)

    def work():
        rgb = decode_image(data, settings.max_pixels)
        res = _engine_call(engine.cam, rgb, label_idx, refined=refined)
        if fmt == "npz":
            return enc.cams_npz(res, names), res
        if fmt == "png":
            return enc.png_rgb(enc.tile_overlays(rgb, res.cams)), res
        return cam_json(rgb, res, names, refined, threshold), res

    body, res = await _compute(limiter, metrics, "cam_refined" if refined else "cam", "pcm" if refined else "cam", work)
    metrics.images_labelled.labels("cam/refined" if refined else "cam").inc()
    headers = {"X-Seam-Classes": _classes_header(names, res.classes)}
    if fmt == "json":
        return JSONResponse(body, headers=headers)
    if fmt == "npz":
        headers["Content-Disposition"] = 'attachment; filename="cams.npz"'
        return Response(body, media_type="application/octet-stream", headers=headers)
    return Response(body, media_type="image/png", headers=headers)


_CAM_DESC = ("`format=npz`: one float32 HxW array per class (keys: class names; `__classes__`, `__scores__`), "
             "loads with allow_pickle=False. `format=png`: heat-map overlays, one tile per class side by side "
             "(X-Seam-Classes names them in order). `format=json`: per-class min/max/mean, area above the threshold "
             "and base64 PNG overlays.")
_CAM_RESPONSES = {200: {"model": CamResponse, "description": "npz, PNG or JSON.",
                        "content": {"image/png": _BINARY, "application/octet-stream": _BINARY}}, **_ERRORS}
CamFormat = Annotated[Literal["npz", "png", "json"], Form(alias="format", description="npz, png or json.")]


@router.post("/cam", response_model=None, summary="Raw class activation maps.", description=_CAM_DESC,
             responses=_CAM_RESPONSES)
async def cam(engine: EngineDep, settings: SettingsDep, limiter: LimiterDep, metrics: MetricsDep,
              image: ImageFile, labels: LabelsField = None, threshold: ThresholdField = None,
              fmt: CamFormat = "npz") -> Response:
    return await _cam(engine, settings, limiter, metrics, image, labels, threshold, fmt, refined=False)


@router.post("/cam/refined", response_model=None, summary="PCM-refined class activation maps.",
             description=_CAM_DESC, responses=_CAM_RESPONSES)
async def cam_refined(engine: EngineDep, settings: SettingsDep, limiter: LimiterDep, metrics: MetricsDep,
                      image: ImageFile, labels: LabelsField = None, threshold: ThresholdField = None,
                      fmt: CamFormat = "npz") -> Response:
    return await _cam(engine, settings, limiter, metrics, image, labels, threshold, fmt, refined=True)
