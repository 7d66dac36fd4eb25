"""Dense CRF refinement with the authors' settings (`imutils.crf_inference`).

pydensecrf2 is optional (the `crf` extra); it is imported only when a CRF runs.
"""
from __future__ import annotations

from collections.abc import Sequence
from types import ModuleType

import numpy as np

from seam.common.cam import background_score

CRF_ITERS = 10
GAUSS_SXY, GAUSS_COMPAT = 3, 3
BI_SXY, BI_SRGB, BI_COMPAT = 80, 13, 10


def _densecrf() -> ModuleType:
    try:
        import pydensecrf.densecrf as dcrf
    except ImportError as exc:
        raise RuntimeError("dense CRF needs pydensecrf2: pip install pydensecrf2") from exc
    return dcrf


def dense_crf(
    rgb: np.ndarray,
    probs: np.ndarray,
    iters: int = CRF_ITERS,
    gauss_sxy: float = GAUSS_SXY,
    gauss_compat: float = GAUSS_COMPAT,
    bi_sxy: float = BI_SXY,
    bi_srgb: float = BI_SRGB,
    bi_compat: float = BI_COMPAT,
) -> np.ndarray:
    """Mean-field posterior (C, H, W) float32 for unary -log(probs) on an (H, W, 3) uint8 image.

    `probs` need not sum to 1 (the authors feed [bg score, CAMs] unnormalised);
    values are clipped at 1e-5 before the log, as pydensecrf's unary_from_softmax.
    """
    dcrf = _densecrf()
    from pydensecrf.utils import unary_from_softmax

    rgb = np.asarray(rgb)
    probs = np.asarray(probs, dtype=np.float32)
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"rgb must be (H, W, 3) uint8, got {rgb.shape} {rgb.dtype}")
    if probs.ndim != 3 or probs.shape[1:] != rgb.shape[:2]:
        raise ValueError(f"probs must be (C, H, W) matching the image {rgb.shape[:2]}, got {probs.shape}")
    c, h, w = probs.shape
    if c < 1:
        raise ValueError("probs needs at least one channel")
    d = dcrf.DenseCRF2D(w, h, c)
    d.setUnaryEnergy(np.ascontiguousarray(unary_from_softmax(probs)))
    d.addPairwiseGaussian(sxy=gauss_sxy, compat=gauss_compat)
    # the C++ side reads the image buffer directly: it must be a contiguous uint8 copy
    d.addPairwiseBilateral(sxy=bi_sxy, srgb=bi_srgb, rgbim=np.ascontiguousarray(np.copy(rgb)), compat=bi_compat)
    q = d.inference(iters)
    return np.asarray(q, dtype=np.float32).reshape(c, h, w)


def crf_refine_cams(rgb: np.ndarray, cams: np.ndarray, classes: Sequence[int], threshold: float) -> np.ndarray:
    """CRF-refined pseudo label (H, W) uint8: 0 = background, c+1 = foreground class c.

    Probabilities are [threshold everywhere, CAMs] normalised over channels, so
    without the CRF their argmax is exactly `cams_to_label`.
    """
    h, w = rgb.shape[:2]
    if len(classes) == 0:
        return np.zeros((h, w), np.uint8)
    cams = np.asarray(cams, dtype=np.float32)
    if cams.shape[0] != len(classes):
        raise ValueError(f"{len(classes)} classes but {cams.shape[0]} CAMs")
    scores = np.concatenate([np.full((1, *cams.shape[1:]), threshold, np.float32), cams], axis=0)
    scores = np.maximum(scores, 0)
    probs = scores / np.maximum(scores.sum(axis=0, keepdims=True), 1e-5)
    post = dense_crf(rgb, probs)
    lut = np.asarray([0, *[c + 1 for c in classes]], dtype=np.uint8)
    return lut[post.argmax(axis=0)]


def crf_affinity_labels(rgb: np.ndarray, cams: np.ndarray, classes: Sequence[int], alpha: float) -> np.ndarray:
    """Posterior (K+1, H, W) for [(1 - max CAM)^alpha, CAMs], as the authors' la/ha maps.

    Channel 0 is background, channel i+1 is `classes[i]`. Left unnormalised before
    the CRF like the release (`infer_SEAM.py`), so the labels match theirs.
    """
    cams = np.asarray(cams, dtype=np.float32)
    if cams.shape[0] != len(classes):
        raise ValueError(f"{len(classes)} classes but {cams.shape[0]} CAMs")
    scores = np.concatenate([background_score(cams, alpha)[None], cams], axis=0)
    return dense_crf(rgb, scores)
