"""The one image a labelling tool sends to be segmented (Label Studio's /predict, CVAT's
/detect)."""
from __future__ import annotations

from collections.abc import Sequence

from seam.service.core.errors import ApiError
from seam.service.engine.base import InferenceEngine, MemoryBudgetError, SegmentResult
from seam.service.inputs import decode_image


def segment_upload(engine: InferenceEngine, data: bytes, max_pixels: int, labels: Sequence[int] | None,
                   method: str, threshold: float | None = None) -> SegmentResult:
    """Decode one image the tool sent and segment it; the engine refusing it is a 413 (over
    its memory budget) or a 422."""
    rgb = decode_image(data, max_pixels)
    try:
        return engine.segment(rgb, labels, method=method, threshold=threshold)
    except ValueError as exc:
        status = 413 if isinstance(exc, MemoryBudgetError) else 422
        raise ApiError(status, "unprocessable_image", f"the model cannot process this image: {exc}") from None
