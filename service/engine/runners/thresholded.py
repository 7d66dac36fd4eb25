"""cam and pcm: class maps above a background threshold (the authors' infer_SEAM labels),
optionally through a dense CRF."""
from __future__ import annotations

import numpy as np
from seam.service.engine.base import SegmentResult
from seam.service.engine.runners.host import MethodHost, SegmentCall, SegmentRunner

from seam.common.cam import CamResult, cams_to_label, present_classes
from seam.common.image import resize_rgb


def cam_probabilities(cams: np.ndarray, threshold: float) -> np.ndarray:
    """(1 + K, h, w) probabilities [background = threshold, CAMs], as seam.common.crf.crf_refine_cams."""
    scores = np.maximum(np.concatenate([np.full((1, *cams.shape[1:]), threshold, np.float32), cams], axis=0), 0)
    return scores / np.maximum(scores.sum(axis=0, keepdims=True), 1e-5)


def threshold_label(host: MethodHost, rgb: np.ndarray, res: CamResult, threshold: float, crf: bool) -> np.ndarray:
    """Labels at `rgb`'s size from its CAMs `res` (at any size): background where no map reaches
    `threshold`; with `crf`, the dense CRF of those scores on the image at the maps' size."""
    out_hw = rgb.shape[:2]
    if crf and res.classes:
        small = resize_rgb(rgb, res.cams.shape[1:])
        return host.crf_label(small, cam_probabilities(res.cams, threshold), res.classes, out_hw)
    return cams_to_label(res.cams, res.classes, threshold, out_hw=out_hw)


def thresholded(refined: bool) -> SegmentRunner:
    """The runner thresholding the PCM's CAMs (`refined`) or the raw ones."""

    def run(host: MethodHost, call: SegmentCall) -> list[SegmentResult]:
        thr = host.background_threshold(call.threshold)
        works = host.working_cams(call.rgbs, call.labels, refined, call.max_side)
        out = []
        for rgb, res in zip(call.rgbs, works, strict=True):
            label = threshold_label(host, rgb, res, thr, call.crf)
            # the classes reported are those the mask shows (a threshold can leave one empty)
            out.append(SegmentResult(label=label, classes=present_classes(label, res.classes), scores=res.scores,
                                     method=call.method, cams=res))
        return out

    return run
