"""rw: the PCM's CAMs propagated by AffinityNet's random walk (the authors' infer_aff),
optionally + dense CRF."""
from __future__ import annotations

import numpy as np
from seam.service.engine.base import SegmentResult
from seam.service.engine.runners.host import Footprint, ModelHost, SegmentCall

from seam.common.cam import CamResult, label_argmax, present_classes, resize_bilinear, stride_size
from seam.common.image import resize_rgb
from seam.common.random_walk import affinity_from_features, pooled_cams, random_walk_scores, walk_radius

# bytes of the sparse transition matrix and its powers per node of the stride-8 grid
# (radius 5: ~80 pairs a node)
WALK_BYTES_PER_NODE = 200 * 16


def run(host: ModelHost, call: SegmentCall) -> list[SegmentResult]:
    works = host.working_cams(call.rgbs, call.labels, True, call.max_side)
    out = []
    for rgb, res in zip(call.rgbs, works, strict=True):
        small = resize_rgb(rgb, res.cams.shape[1:])
        label = walk_label(host, small, res, call.crf, rgb.shape[:2])
        out.append(SegmentResult(label=label, classes=present_classes(label, res.classes), scores=res.scores,
                                 method=call.method, cams=res))
    return out


def walk_label(host: ModelHost, rgb: np.ndarray, res: CamResult, crf: bool, out_hw: tuple[int, int]) -> np.ndarray:
    """The walk at the working size (`rgb` and `res` share it); labels at `out_hw`."""
    h0, w0 = rgb.shape[:2]
    if not res.classes:
        return np.zeros(out_hw, np.uint8)
    aff = host.model("affinity")
    rw = aff.manifest.random_walk
    assert rw is not None  # guaranteed by the manifest schema for affinity models
    feat = affinity_features(host, rgb)
    grid = pooled_cams(res.cams, feat.shape[1:], rw.alpha)
    # the release shrinks the pair radius on grids too small for it (seam.common.random_walk)
    radius = walk_radius(feat.shape[1], feat.shape[2], rw.radius)
    scores = random_walk_scores(grid, affinity_from_features(feat, radius), rw.beta, rw.logt)
    h, w = scores.shape[1:]
    # the authors' upsampling: to the padded grid * 8, cropped to the image
    up = resize_bilinear(scores, (h * 8, w * 8))[:, :h0, :w0]
    if not crf:
        return label_argmax(up, res.classes, out_hw)
    up = np.maximum(up, 0)
    return host.crf_label(rgb, up / np.maximum(up.sum(axis=0, keepdims=True), 1e-5), res.classes, out_hw)


def affinity_features(host: ModelHost, rgb: np.ndarray) -> np.ndarray:
    """(D, ceil(H/8), ceil(W/8)) features of the normalised image zero-padded to multiples of 8."""
    m = host.model("affinity")
    H, W = rgb.shape[:2]
    padded = np.zeros((1, 3, -(-H // 8) * 8, -(-W // 8) * 8), np.float32)
    padded[0, :, :H, :W] = m.normalization(rgb)
    return host.run(m, padded)[0][0]


def footprint(host: ModelHost, working_hw: tuple[int, int]) -> Footprint:
    """The AffinityNet pass over the whole working-size image and the walk's sparse matrices."""
    h0, w0 = working_hw
    aff = host.model("affinity").manifest
    return Footprint(net=int(aff.input.bytes_per_pixel * h0 * w0),
                     work=stride_size(h0) * stride_size(w0) * WALK_BYTES_PER_NODE)
