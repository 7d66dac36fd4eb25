"""A deterministic, torch-free, model-free `InferenceEngine` for tests, demos and CI.

Selected with `SEAM_ENGINE=fake` (documented as a test/dev mode in docs/service.md).
Classes are colours: the CAM of "red" is how much the red channel dominates the
other two; "refined" (PCM-like) maps are a box-blurred version of the raw ones.
Cheap numpy only, so end-to-end tests exercise the whole service without a model.
"""
from __future__ import annotations

import threading
import time
from collections.abc import Sequence

import numpy as np
from seam.service.engine import methods
from seam.service.engine.base import MapSize, ModelInfo, SegmentResult
from seam.service.engine.cancel import check_wanted
from seam.service.engine.runners.host import SegmentCall

from seam.common.cam import DEFAULT_BG_THRESHOLD, CamResult, label_argmax, nonempty_classes, predict_classes

FAKE_CLASSES: tuple[str, ...] = ("red", "green", "blue")
FAIL_PIXEL = (1, 2, 3)  # an image whose top-left pixel is exactly this makes the engine raise
FAKE_CLS_THRESHOLD = 0.5  # the fake model's "manifest" class threshold
FAKE_DESCRIPTION = "test engine: which colour channel dominates (red, green, blue); not a model"
# the model kinds it stands in for: it offers every method of the table that needs no other
FAKE_KINDS = ("seam",)


class FakeEngineError(RuntimeError):
    pass


def _passes(seconds: float, step_s: float = 0.05) -> None:
    """The simulated compute time, in passes like a real engine's (each asks whether it is still wanted)."""
    end = time.monotonic() + seconds
    while (left := end - time.monotonic()) > 0:
        check_wanted()
        time.sleep(min(step_s, left))


def _box_blur(x: np.ndarray, r: int) -> np.ndarray:
    """(C, H, W) mean filter of radius r (edge-padded), via cumulative sums."""
    if r <= 0:
        return x
    k = 2 * r + 1
    p = np.pad(x, ((0, 0), (r + 1, r), (r + 1, r)), mode="edge").astype(np.float64)
    c = p.cumsum(1).cumsum(2)
    s = c[:, k:, k:] - c[:, :-k, k:] - c[:, k:, :-k] + c[:, :-k, :-k]
    return (s / (k * k)).astype(np.float32)


class FakeEngine:
    """Runs the table's methods that need only a SEAM model (their runners see it as a
    `runners.host.MethodHost`), on its colour CAMs."""

    def __init__(self, classes: Sequence[str] = FAKE_CLASSES, delay_ms: float = 0.0) -> None:
        self._classes = list(classes)
        self.delay_s = delay_ms / 1000.0
        self.calls = 0
        self._batch = threading.local()

    # --- protocol -------------------------------------------------------------
    def models(self) -> list[ModelInfo]:
        return [ModelInfo(name="fake", kind=kind, backbone="numpy", classes=list(self._classes),
                          provider="fake", manifest={"engine": "fake"}, description=FAKE_DESCRIPTION,
                          cls_threshold=FAKE_CLS_THRESHOLD, bg_threshold=DEFAULT_BG_THRESHOLD) for kind in FAKE_KINDS]

    def foreground_classes(self) -> list[str]:
        return list(self._classes)

    def methods(self) -> list[str]:
        # read when asked, so a method registered after the engine was made is offered
        return methods.available(FAKE_KINDS)

    def cam(self, rgb: np.ndarray, labels: Sequence[int] | None = None, refined: bool = True,
            scales: Sequence[float] | None = None, flip: bool | None = None,
            max_side: int | None = None, size: MapSize = "image") -> CamResult:
        # max_side is accepted and ignored: the fake engine always works at the image's size,
        # so its working size (size="working") is the image's too
        self.calls += 1
        if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
            raise ValueError(f"expected (H, W, 3) uint8, got {rgb.shape} {rgb.dtype}")
        if tuple(int(v) for v in rgb[0, 0]) == FAIL_PIXEL:
            raise FakeEngineError("fake engine failure (trigger pixel)")
        if self.delay_s and not getattr(self._batch, "active", False):
            _passes(self.delay_s)
        H, W = rgb.shape[:2]
        n = len(self._classes)
        x = rgb.astype(np.float32) / 255.0
        dom = np.zeros((n, H, W), np.float32)
        for c in range(min(n, 3)):
            others = [x[..., o] for o in range(3) if o != c]
            dom[c] = np.clip(x[..., c] - 0.5 * (others[0] + others[1]), 0.0, 1.0)
        maps = _box_blur(dom, 2) if refined else dom
        scores = np.clip((dom > 0.2).mean(axis=(1, 2)) * 4.0, 0.0, 1.0).astype(np.float32)
        if labels is not None:
            classes = sorted(int(c) for c in labels)
        else:  # the real engines' rule: predicted, and something to show
            predicted = predict_classes(scores, FAKE_CLS_THRESHOLD)
            classes = nonempty_classes(predicted, maps[predicted])
        raw = maps[classes] if classes else np.zeros((0, H, W), np.float32)
        hi = raw.max(axis=(1, 2), keepdims=True) if classes else np.ones((0, 1, 1), np.float32)
        cams = (raw / np.maximum(hi, 1e-5)).astype(np.float32)
        return CamResult(classes=classes, cams=cams, scores=scores, raw=raw)

    def segment(self, rgb: np.ndarray, labels: Sequence[int] | None = None, method: str | None = None,
                threshold: float | None = None, crf: bool = False, max_side: int | None = None) -> SegmentResult:
        available = self.methods()
        method = method or available[0]
        if method not in available:
            raise ValueError(f"method {method!r} not available (have {available})")
        call = SegmentCall(method, [rgb], [None if labels is None else sorted(int(c) for c in labels)], threshold,
                           crf, max_side)
        return methods.get(method).run(self, call)[0]

    # --- what the methods' runners ask (runners.host.MethodHost) ----------------------
    def working_cams(self, rgbs: Sequence[np.ndarray], labels: Sequence[list[int] | None], refined: bool,
                     max_side: int | None) -> list[CamResult]:
        return [self.cam(rgb, lb, refined=refined) for rgb, lb in zip(rgbs, labels, strict=True)]

    def background_threshold(self, threshold: float | None) -> float:
        return DEFAULT_BG_THRESHOLD if threshold is None else threshold

    def crf_label(self, rgb: np.ndarray, probs: np.ndarray, classes: Sequence[int],
                  out_hw: tuple[int, int]) -> np.ndarray:
        return label_argmax(probs, classes, out_hw)  # no CRF in the fake: the probabilities' argmax

    # --- the batch API (an idealised accelerator: a batch costs one image's delay) ------
    def _many(self, fn, rgbs: Sequence[np.ndarray], labels: Sequence[Sequence[int] | None], **kw) -> list:
        if len(rgbs) != len(labels):
            raise ValueError(f"{len(rgbs)} images but {len(labels)} label lists")
        if self.delay_s:
            _passes(self.delay_s)
        self._batch.active = True
        try:  # like a real batch, one failing image fails the whole call
            return [fn(rgb, lb, **kw) for rgb, lb in zip(rgbs, labels, strict=True)]
        finally:
            self._batch.active = False

    def segment_many(self, rgbs: Sequence[np.ndarray], labels: Sequence[Sequence[int] | None],
                     method: str | None = None, threshold: float | None = None, crf: bool = False,
                     max_side: int | None = None) -> list[SegmentResult]:
        return self._many(self.segment, rgbs, labels, method=method, threshold=threshold, crf=crf)

    def cam_many(self, rgbs: Sequence[np.ndarray], labels: Sequence[Sequence[int] | None], refined: bool = True,
                 max_side: int | None = None, size: MapSize = "image") -> list[CamResult]:
        return self._many(self.cam, rgbs, labels, refined=refined)
