"""Engine batches with a per-image fallback, shared by job chunks and the workers'
synchronous-request path.

`segment_many` / `cam_many` (the engine's batch API: images sharing a working size run
as one onnxruntime batch per scale) are used when the engine has them; an engine
without them, or a batch that raises, is run image by image so that one bad image
fails alone. Results come back in input order, each a result or the exception that
image raised.
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Hashable, Iterable, Sequence
from typing import Any, TypeVar

import numpy as np
from seam.service.engine.base import InferenceEngine, SegmentResult

from seam.common.cam import CamResult

log = logging.getLogger("seam.service")

T = TypeVar("T")
K = TypeVar("K", bound=Hashable)


def _kwargs(**kw: Any) -> dict[str, Any]:
    # max_side/crf are only passed when set, so engines that predate them keep working.
    return {k: v for k, v in kw.items() if v is not None and not (k == "crf" and v is False)}


def _run(many: Callable[..., list[T]] | None, one: Callable[..., T], rgbs: Sequence[np.ndarray],
         labels: Sequence[Sequence[int] | None], kw: dict[str, Any]) -> list[T | Exception]:
    if len(rgbs) != len(labels):
        raise ValueError(f"{len(rgbs)} images but {len(labels)} label lists")
    if many is not None and len(rgbs) > 1:
        try:
            out = many(list(rgbs), [None if lb is None else list(lb) for lb in labels], **kw)
            if len(out) == len(rgbs):
                return list(out)
            log.error("batch call returned %d results for %d images; running them one by one", len(out), len(rgbs))
        except Exception as exc:  # noqa: BLE001 - isolate the image that fails
            log.info("batch of %d failed (%s: %s); running its images one by one", len(rgbs), type(exc).__name__, exc)
    results: list[T | Exception] = []
    for rgb, lb in zip(rgbs, labels, strict=True):
        try:
            results.append(one(rgb, lb, **kw))
        except Exception as exc:  # noqa: BLE001 - reported per image by the caller
            results.append(exc)
    return results


def segment_batch(engine: InferenceEngine, rgbs: Sequence[np.ndarray], labels: Sequence[Sequence[int] | None],
                  method: str | None = None, threshold: float | None = None, crf: bool = False,
                  max_side: int | None = None) -> list[SegmentResult | Exception]:
    kw = _kwargs(method=method, threshold=threshold, crf=crf, max_side=max_side)
    return _run(getattr(engine, "segment_many", None), engine.segment, rgbs, labels, kw)


def cam_batch(engine: InferenceEngine, rgbs: Sequence[np.ndarray], labels: Sequence[Sequence[int] | None],
              refined: bool = True, max_side: int | None = None, size: str = "image") -> list[CamResult | Exception]:
    kw = {"refined": refined, **_kwargs(max_side=max_side, size=None if size == "image" else size)}
    return _run(getattr(engine, "cam_many", None), engine.cam, rgbs, labels, kw)


def batches(items: Iterable[T], key: Callable[[T], K], max_batch: int) -> list[list[T]]:
    """Items grouped by `key` (first-seen order), each group cut into runs of at most max_batch."""
    groups: dict[K, list[T]] = {}
    for it in items:
        groups.setdefault(key(it), []).append(it)
    out: list[list[T]] = []
    for g in groups.values():
        out += [g[i:i + max_batch] for i in range(0, len(g), max(1, max_batch))]
    return out
