"""deeplab: the segmentation network trained on the pseudo-labels (the paper's last step)."""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from seam.service.engine.base import SegmentResult
from seam.service.engine.runners.host import ModelHost, SegmentCall

from seam.common.cam import label_argmax, present_classes, resize_matrices, working_size
from seam.common.image import resize_rgb, scaled_size

if TYPE_CHECKING:
    from seam.service.engine.loading import LoadedModel


def run(host: ModelHost, call: SegmentCall) -> list[SegmentResult]:
    return [segment_one(host, rgb, labels, call.crf, call.max_side, call.method)
            for rgb, labels in zip(call.rgbs, call.labels, strict=True)]


def segment_one(host: ModelHost, rgb: np.ndarray, keep: list[int] | None, crf: bool, max_side: int | None,
                method: str) -> SegmentResult:
    """Softmax of the stride-8 logits at the working size averaged over the manifest's
    scales/flips; known image labels restrict the classes; labels at the image's size."""
    m = host.model("deeplab")
    H, W = rgb.shape[:2]
    h0, w0 = _working_hw(host, m, (H, W), max_side)
    small = resize_rgb(rgb, (h0, w0))
    probs = _probabilities(host, small)
    if keep is not None:
        mask = np.zeros(probs.shape[0], bool)
        mask[[0, *[c + 1 for c in keep]]] = True
        probs[~mask] = 0
        probs /= np.maximum(probs.sum(axis=0, keepdims=True), 1e-12)
    everything = range(probs.shape[0] - 1)
    if crf:  # with the DeepLab model's own CRF settings
        from seam.common.crf import dense_crf

        probs = dense_crf(small, probs, **m.manifest.crf.kwargs())
    label = label_argmax(probs, everything, (H, W))
    scores = probs[1:].reshape(probs.shape[0] - 1, -1).max(axis=1).astype(np.float32)
    classes = present_classes(label, keep if keep is not None else everything)
    return SegmentResult(label=label, classes=classes, scores=scores, method=method)


def _working_hw(host: ModelHost, m: LoadedModel, hw: tuple[int, int], max_side: int | None) -> tuple[int, int]:
    work = working_size(hw, host.working_side(m, max_side))
    host.check_size(m, work, m.manifest.deeplab.scales)
    return work


def _probabilities(host: ModelHost, small: np.ndarray) -> np.ndarray:
    """(C, h0, w0) class probabilities of the working-size image, averaged over scales and flips
    (logits upsampled with align_corners=False before the softmax, as the release)."""
    m = host.model("deeplab")
    s = m.manifest.deeplab
    assert s is not None  # guaranteed by the manifest schema for deeplab models
    h0, w0 = small.shape[:2]
    total: np.ndarray | None = None
    n = 0
    for sc in s.scales:
        x = m.normalization(resize_rgb(small, scaled_size((h0, w0), sc)))
        batch = np.stack([x, x[:, :, ::-1]]) if s.flip else x[None]
        logits = host.run(m, np.ascontiguousarray(batch))[0]
        up = _softmax(_upsample(logits, (h0, w0)))
        if s.flip:
            up[1] = up[1][:, :, ::-1]
        total = up.sum(axis=0) if total is None else total + up.sum(axis=0)
        n += up.shape[0]
    assert total is not None  # the manifest schema requires at least one scale
    return total / n


def _upsample(logits: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    ry, rx = resize_matrices(logits.shape[-2:], [(hw, False)])
    return np.einsum("Hh,bchw,Ww->bcHW", ry, logits.astype(np.float32), rx, optimize=True)


def _softmax(x: np.ndarray) -> np.ndarray:
    x -= x.max(axis=1, keepdims=True)
    np.exp(x, out=x)
    x /= x.sum(axis=1, keepdims=True)
    return x
