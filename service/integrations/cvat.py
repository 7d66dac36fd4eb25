"""CVAT: the serverless-function contract served by the API, and the nuclio function
that forwards to it.

CVAT calls a nuclio function with `{"image": <base64>, "threshold": <float>}` and expects a
list of `{"label", "confidence", "type": "mask", "points", "mask"}` (`mask`: the row-major
0/255 crop of the inclusive bbox followed by xtl, ytl, xbr, ybr; `points`: a contour). The
nuclio handler (`docker/cvat-nuclio/main.py`, stdlib only) forwards the body to
`POST /cvat/detect`, which answers exactly that list, so the function needs no model and no
packages. `seam cvat function-yaml` writes its function.yaml with the loaded model's classes.
"""
from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Sequence
from typing import Annotated

import numpy as np
from fastapi import APIRouter, Body, Depends, FastAPI, Response
from pydantic import BaseModel, ConfigDict, Field
from seam.service.api.deps import HolderDep, LimiterDep, MetricsDep, SettingsDep, require_api_key
from seam.service.core.engine_holder import resolve_method
from seam.service.core.errors import ApiError
from seam.service.core.limits import run_limited
from seam.service.core.registry import MODEL_HEADER, served_by
from seam.service.engine.base import SegmentResult
from seam.service.inputs import resolve_or_422
from seam.service.integrations.upload import segment_upload
from seam.service.schemas import MODEL_REF_PATTERN, MethodName
from starlette.concurrency import run_in_threadpool

from seam.common.labelling import cvat_nuclio_mask, mask_polygons


class DetectRequest(BaseModel):
    model_config = ConfigDict(extra="allow")  # CVAT may add fields (e.g. "frame")
    image: str = Field(description="The frame, base64 (any format Pillow reads).")
    threshold: float | None = Field(None, ge=0.0, le=1.0, description="Drop classes whose image-level score is lower.")
    labels: list[str] | None = Field(None, description="Image-level labels (class names); absent: predicted.")
    method: MethodName | None = None
    model: str | None = Field(None, max_length=200, pattern=MODEL_REF_PATTERN, description=(
        "NAME or NAME:VERSION (GET /models); unset = the default model's promoted version. The answer's "
        "X-Seam-Model header names the version that computed it."))


router = APIRouter(prefix="/cvat", tags=["cvat"], dependencies=[Depends(require_api_key)])


def install(app: FastAPI) -> None:
    app.include_router(router)


def cvat_shapes(seg: SegmentResult, names: Sequence[str], threshold: float | None) -> list[dict]:
    """One mask result per predicted class (CVAT's serverless output)."""
    out = []
    for c in seg.classes:
        mask = seg.label == c + 1
        if not mask.any():
            continue
        score = float(seg.scores[c]) if c < len(seg.scores) else 1.0
        if threshold is not None and score < threshold:
            continue
        polys = mask_polygons(mask)
        contour = max(polys, key=len) if polys else np.zeros((0, 2))
        out.append({"label": names[c], "confidence": str(round(score, 6)), "type": "mask",
                    "points": [int(v) for v in contour.ravel()], "mask": cvat_nuclio_mask(mask)})
    return out


def _decode_b64(s: str) -> bytes:
    try:
        return base64.b64decode(s, validate=True)
    except (binascii.Error, ValueError):
        raise ApiError(422, "invalid_image", "field 'image' is not valid base64") from None


@router.post("/detect", summary="CVAT serverless detector: masks of one frame.",
             description="The body CVAT sends to a nuclio function (`{image: base64, threshold}`); the answer is the "
                         "list CVAT expects (`type: mask` with the bbox-cropped 0/255 mask). Used by the nuclio "
                         "function "
                         "in docker/cvat-nuclio (docs/cvat.md).")
async def detect(body: Annotated[DetectRequest, Body()], holder: HolderDep, settings: SettingsDep,
                 limiter: LimiterDep, metrics: MetricsDep, response: Response) -> list[dict]:
    served = await run_in_threadpool(served_by, holder, body.model)
    engine = served.engine
    response.headers[MODEL_HEADER] = served.ref
    names = engine.foreground_classes()
    labels = resolve_or_422(body.labels, names) if body.labels else None
    method = resolve_method(engine, body.method)
    data = _decode_b64(body.image)

    def work() -> list[dict]:
        return cvat_shapes(segment_upload(engine, data, settings.max_pixels, labels, method), names, body.threshold)

    shapes = await run_limited(limiter, metrics, "cvat", method, work)
    metrics.images_labelled.labels("cvat").inc()
    return shapes


# --- the nuclio function.yaml ---------------------------------------------------------------
def function_yaml(classes: Sequence[str], seam_url: str, name: str = "seam-wsss", api_key_env: str = "SEAM_API_KEY",
                  max_body_mb: int = 64) -> str:
    """function.yaml for `nuctl deploy` (CVAT serverless), handler = docker/cvat-nuclio/main.py.
    JSON is valid YAML: the spec string is emitted with json.dumps so any class name is safe."""
    spec = json.dumps([{"id": i, "name": n, "type": "mask"} for i, n in enumerate(classes)])
    q = json.dumps
    return f"""metadata:
  name: {q(name)}
  namespace: cvat
  annotations:
    name: {q("seam-wsss (" + name + ")")}
    type: detector
    framework: onnxruntime
    spec: {q(spec)}

spec:
  description: {q("seam-wsss weakly supervised segmentation: masks per class, via the seam HTTP API")}
  runtime: "python:3.11"
  handler: main:handler
  eventTimeout: 120s
  env:
    - name: SEAM_URL
      value: {q(seam_url)}
    - name: {api_key_env}
      value: ""
  build:
    image: cvat.seam-wsss
    baseImage: python:3.11-slim
  triggers:
    myHttpTrigger:
      maxWorkers: 2
      kind: http
      workerAvailabilityTimeoutMilliseconds: 10000
      attributes:
        maxRequestBodySize: {max_body_mb * 1024 * 1024}
  platform:
    attributes:
      restartPolicy:
        name: always
        maximumRetryCount: 3
      mountMode: volume
"""


def model_classes(models_dir: str | None, url: str | None, api_key: str | None) -> list[str]:
    """The foreground classes of a running API's model (`url`), else of the model repository's."""
    if url:
        import httpx

        r = httpx.get(url.rstrip("/") + "/models", headers={"X-API-Key": api_key} if api_key else {}, timeout=30)
        r.raise_for_status()
        return list(r.json()["classes"])
    from seam.service.engine.onnx_engine import OnnxEngine

    return OnnxEngine(models_dir or "models").foreground_classes()
