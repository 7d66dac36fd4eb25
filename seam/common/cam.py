"""CAM post-processing shared by the torch path and the onnxruntime engine.

The authors' `infer_SEAM` does, per image: for each scale s and flip, run the net
(whose outputs are upsampled to the input size with align_corners=True), upsample
again to the original size (align_corners=False), keep the foreground channels,
multiply by the image labels, un-flip, sum over passes, clip at 0 and min-max
normalise each class. Both upsamplings are linear, so we apply their product
once to the stride-8 maps: identical maths, far less memory, no HxW intermediate
per pass.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

from seam.common.image import Normalization, resize_rgb, scaled_size

DEFAULT_SCALES: tuple[float, ...] = (0.5, 1.0, 1.5, 2.0)
DEFAULT_BG_THRESHOLD = 0.26  # SEAM's published default background score
DEFAULT_CLS_THRESHOLD = 0.5  # sigmoid(GAP score) above which a class is predicted present
OUTPUT_STRIDE = 8


@lru_cache(maxsize=256)
def interp_matrix(out_n: int, in_n: int, align_corners: bool) -> np.ndarray:
    """(out_n, in_n) float64 matrix M so that M @ v is torch's 1-D linear interpolation."""
    m = np.zeros((out_n, in_n), dtype=np.float64)
    if in_n == 1:
        m[:, 0] = 1.0
        return m
    idx = np.arange(out_n, dtype=np.float64)
    if align_corners:
        src = idx * ((in_n - 1) / (out_n - 1)) if out_n > 1 else np.zeros(1)
    else:
        src = (idx + 0.5) * (in_n / out_n) - 0.5
        src = np.maximum(src, 0.0)  # torch clamps negative source coords to 0
    lo = np.minimum(np.floor(src).astype(np.int64), in_n - 1)
    hi = np.minimum(lo + 1, in_n - 1)
    w_hi = src - lo
    rows = np.arange(out_n)
    np.add.at(m, (rows, lo), 1.0 - w_hi)
    np.add.at(m, (rows, hi), w_hi)
    m.flags.writeable = False
    return m


def resize_matrices(
    in_hw: tuple[int, int], steps: Sequence[tuple[tuple[int, int], bool]]
) -> tuple[np.ndarray, np.ndarray]:
    """Compose successive bilinear resizes [(size, align_corners), ...] into (Ry, Rx)."""
    key = tuple((tuple(size), bool(ac)) for size, ac in steps)
    return _composed(tuple(in_hw), key)


@lru_cache(maxsize=128)
def _composed(in_hw: tuple[int, int], steps: tuple[tuple[tuple[int, int], bool], ...]) -> tuple[np.ndarray, np.ndarray]:
    # cached: a data set repeats the same few image sizes, and every scale needs its own pair
    h, w = in_hw
    ry = np.eye(h)
    rx = np.eye(w)
    for (oh, ow), ac in steps:
        ry = interp_matrix(oh, ry.shape[0], ac) @ ry
        rx = interp_matrix(ow, rx.shape[0], ac) @ rx
    ry, rx = ry.astype(np.float32), rx.astype(np.float32)
    ry.flags.writeable = False
    rx.flags.writeable = False
    return ry, rx


def apply_resize(maps: np.ndarray, ry: np.ndarray, rx: np.ndarray) -> np.ndarray:
    """(C, h, w) -> (C, H, W) with precomputed matrices."""
    return np.einsum("Hh,chw,Ww->cHW", ry, maps.astype(np.float32, copy=False), rx, optimize=True)


def resize_bilinear(maps: np.ndarray, out_hw: tuple[int, int], align_corners: bool = False) -> np.ndarray:
    """(C, h, w) float -> (C, H, W) float32, identical to F.interpolate(mode='bilinear')."""
    ry, rx = resize_matrices(maps.shape[-2:], [(out_hw, align_corners)])
    return apply_resize(maps, ry, rx)


def stride_size(n: int, stride: int = OUTPUT_STRIDE) -> int:
    """Feature size of ResNet-38 (three stride-2 3x3 convs with padding 1)."""
    for _ in range(int(np.log2(stride))):
        n = (n + 1) // 2
    return n


def release_min_max(summed: np.ndarray) -> np.ndarray:
    """The authors' final step of infer_SEAM, quirks included: clip at 0, then per class
    `(x - min - 1e-5) / (max - min + 1e-5)` after zeroing values below `min + 1e-5`.

    Not in [0, 1]: the zeroed pixels come out negative (-1.0 everywhere for an all-zero
    map). Only for files that must equal the release's `.npy` (`CamResult.as_dict`);
    everything else uses `normalize_cams`."""
    x = np.maximum(summed, 0).astype(np.float32)
    lo = x.min(axis=(-2, -1), keepdims=True)
    hi = x.max(axis=(-2, -1), keepdims=True)
    x[x < lo + 1e-5] = 0
    return (x - lo - 1e-5) / (hi - lo + 1e-5)


def normalize_cams(summed: np.ndarray) -> np.ndarray:
    """Per-class maps in [0, 1]: the release's min-max (`release_min_max`) clipped at 0, so
    every value the release gives in [0, 1] is unchanged (and so is every label map
    thresholded at >= 0), while an all-zero map stays all zero instead of becoming -1."""
    return np.clip(release_min_max(summed), 0.0, 1.0)


def predict_classes(scores: np.ndarray, threshold: float) -> list[int]:
    """Foreground classes predicted present: sigmoid(GAP score) >= threshold (ascending).

    The one rule behind the service, the jobs and `seam cam`; the threshold is the model's
    (manifest `cam.cls_threshold`) unless a caller overrides it; above 1 nothing is predicted."""
    return [int(c) for c in np.flatnonzero(np.asarray(scores).reshape(-1) >= threshold)]


def nonempty_classes(classes: Sequence[int], cams: np.ndarray) -> list[int]:
    """The classes of `cams` (K, H, W) whose map is not all zero: a predicted class with
    nothing to show is not reported present."""
    if len(classes) == 0:
        return []
    peak = cams.reshape(cams.shape[0], -1).max(axis=1)
    return [int(c) for c, p in zip(classes, peak, strict=True) if p > 0]


def present_classes(label: np.ndarray, classes: Sequence[int]) -> list[int]:
    """The classes of `classes` that label at least one pixel of `label` (value c + 1):
    what a segmentation reports, so its class list and its mask agree."""
    if len(classes) == 0:
        return []
    counts = np.bincount(np.asarray(label, np.uint8).ravel(), minlength=256)
    return [int(c) for c in classes if counts[int(c) + 1] > 0]


def background_score(cams: np.ndarray, alpha: float) -> np.ndarray:
    """(1 - max_c CAM)^alpha, the background channel used for AffinityNet labels and the random walk."""
    if cams.shape[0] == 0:
        return np.ones(cams.shape[1:], np.float32)
    return np.power(1.0 - cams.max(axis=0), alpha).astype(np.float32)


def cams_to_label(cams: np.ndarray, classes: Sequence[int], threshold: float = DEFAULT_BG_THRESHOLD,
                  out_hw: tuple[int, int] | None = None) -> np.ndarray:
    """argmax over [threshold, CAMs] -> (H, W) uint8 label map (0 = background, c+1 = class c).

    out_hw: bilinear-upsample the maps to this size first (strip by strip, see `label_argmax`)."""
    bg = np.full((1, *cams.shape[1:]), threshold, dtype=np.float32)
    return label_argmax(np.concatenate([bg, cams.astype(np.float32, copy=False)], axis=0), classes, out_hw)


# rows per strip when a label map is taken from upsampled scores: bounds the float
# intermediate to C * STRIP_ROWS * W values whatever the image height
STRIP_ROWS = 256


def label_argmax(scores: np.ndarray, classes: Sequence[int], out_hw: tuple[int, int] | None = None) -> np.ndarray:
    """(1 + K, h, w) scores [background, classes...] -> (H, W) uint8 labels (c + 1 for class c;
    ties go to the earlier channel, so background wins a tie).

    out_hw: upsample (bilinear, align_corners=False) to this size, in strips of rows, so
    that a 12-megapixel label map never needs the (1 + K, H, W) float scores at once."""
    lut = np.asarray([0, *[int(c) + 1 for c in classes]], dtype=np.uint8)
    if len(classes) == 0:
        return np.zeros(out_hw or scores.shape[1:], np.uint8)
    if out_hw is None or tuple(out_hw) == scores.shape[1:]:
        return lut[np.argmax(scores, axis=0)]
    ry, rx = resize_matrices(scores.shape[1:], [(tuple(out_hw), False)])
    out = np.empty(out_hw, np.uint8)
    x = scores.astype(np.float32, copy=False)  # once, not per strip
    for r in range(0, out_hw[0], STRIP_ROWS):
        out[r:r + STRIP_ROWS] = lut[np.argmax(apply_resize(x, ry[r:r + STRIP_ROWS], rx), axis=0)]
    return out


def working_size(hw: tuple[int, int], max_side: int | None) -> tuple[int, int]:
    """The size an image is processed at: unchanged when its long side is <= max_side,
    else scaled (aspect kept, Python rounding) so that the long side is max_side."""
    h, w = hw
    if max_side is None or max(h, w) <= max_side:
        return h, w
    s = max_side / max(h, w)
    return max(1, int(round(h * s))), max(1, int(round(w * s)))


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


@dataclass
class CamResult:
    """Multi-scale CAMs of one image.

    classes: foreground indices (0-based) of the maps in `cams`.
    cams: (K, H, W) float32 normalised to [0, 1], original image size.
    scores: (num_fg,) sigmoid of the GAP classification logits, averaged over passes.
    """

    classes: list[int]
    cams: np.ndarray
    scores: np.ndarray
    raw: np.ndarray | None = field(default=None, repr=False)

    def as_dict(self) -> dict[int, np.ndarray]:
        """The authors' `.npy` format: {fg class index: HxW float32}, with the release's exact
        values (`release_min_max` of the summed maps, negatives included) for parity with
        infer_SEAM's files; `cams` holds the same maps clipped to [0, 1]."""
        if self.raw is None or self.raw.shape[0] != len(self.classes):
            return {int(c): self.cams[i].astype(np.float32) for i, c in enumerate(self.classes)}
        raw = self.raw if self.raw.shape[1:] == self.cams.shape[1:] else resize_bilinear(self.raw, self.cams.shape[1:])
        maps = release_min_max(raw)
        return {int(c): maps[i] for i, c in enumerate(self.classes)}

    def at_size(self, hw: tuple[int, int]) -> CamResult:
        """The maps bilinearly resized to `hw` (align_corners=False); self when already that size.
        `raw` stays at the size the passes ran at."""
        if tuple(hw) == self.cams.shape[1:]:
            return self
        return CamResult(self.classes, resize_bilinear(self.cams, tuple(hw)), self.scores, self.raw)


# A runner maps a (B, 3, h, w) float32 batch to (cam8, cam_rv8), both (B, C, h8, w8)
# with channel 0 = background, at the network's output stride, before any upsampling.
Runner = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]


@dataclass(frozen=True)
class MultiScaleConfig:
    scales: tuple[float, ...] = DEFAULT_SCALES
    flip: bool = True
    refined: bool = True  # PCM output (cam_rv) as the authors' infer_SEAM; False = raw CAM
    cls_threshold: float = DEFAULT_CLS_THRESHOLD
    normalization: Normalization = Normalization()


def multiscale_cam(
    rgb: np.ndarray,
    runner: Runner,
    labels: Sequence[int] | None = None,
    config: MultiScaleConfig = MultiScaleConfig(),
) -> CamResult:
    """Multi-scale (+ flip) CAM inference of one (H, W, 3) uint8 image.

    The flipped and unflipped pass of a scale go through the runner as one batch of 2.
    `labels`: foreground indices known present (pseudo-label generation); None =
    predict them from the classification scores (`predict_classes`), keeping those whose
    map is not all zero.
    """
    return multiscale_cam_batch([rgb], runner, [labels], config)[0]


def multiscale_cam_batch(
    rgbs: Sequence[np.ndarray],
    runner: Runner,
    labels: Sequence[Sequence[int] | None],
    config: MultiScaleConfig = MultiScaleConfig(),
) -> list[CamResult]:
    """`multiscale_cam` of several images of one size, each scale as one runner batch
    (image 0, image 0 flipped, image 1, ...): same results as one image at a time."""
    if not rgbs:
        return []
    H, W = rgbs[0].shape[:2]
    if any(r.shape[:2] != (H, W) for r in rgbs):
        raise ValueError("multiscale_cam_batch needs images of one size")
    if len(labels) != len(rgbs):
        raise ValueError(f"{len(rgbs)} images but {len(labels)} label lists")
    per = 2 if config.flip else 1
    totals: list[np.ndarray | None] = [None] * len(rgbs)
    score_sum: list[np.ndarray | None] = [None] * len(rgbs)
    n_pass = 0
    for s in config.scales:
        h, w = scaled_size((H, W), s)
        xs = []
        for rgb in rgbs:
            x = config.normalization(resize_rgb(rgb, (h, w)))
            xs += [x, x[:, :, ::-1]] if config.flip else [x]
        cam8, rv8 = runner(np.ascontiguousarray(np.stack(xs)))
        h8, w8 = cam8.shape[-2:]
        # network upsample (align_corners=True) then infer_SEAM's (align_corners=False)
        ry, rx = resize_matrices((h8, w8), [((h, w), True), ((H, W), False)])
        gy, gx = resize_matrices((h8, w8), [((h, w), True)])
        # exact GAP of the input-size raw CAM without building it
        wy, wx = gy.sum(0) / h, gx.sum(0) / w
        logits = np.einsum("bchw,h,w->bc", cam8[:, 1:].astype(np.float32), wy, wx)
        maps = (rv8 if config.refined else cam8)[:, 1:]
        for i in range(len(rgbs)):
            sl = slice(i * per, (i + 1) * per)
            up = np.einsum("Hh,bchw,Ww->bcHW", ry, maps[sl].astype(np.float32), rx, optimize=True)
            up = up[0] + up[1][:, :, ::-1] if config.flip else up[0]
            totals[i] = up if totals[i] is None else totals[i] + up
            sc = sigmoid(logits[sl]).sum(0)
            score_sum[i] = sc if score_sum[i] is None else score_sum[i] + sc
        n_pass += per
    out = []
    for total, ssum, lab in zip(totals, score_sum, labels, strict=True):
        scores = (ssum / n_pass).astype(np.float32)
        classes = predict_classes(scores, config.cls_threshold) if lab is None else sorted(int(c) for c in lab)
        raw = total[classes] if classes else np.zeros((0, H, W), np.float32)
        cams = normalize_cams(raw)
        if lab is None:  # a predicted class whose map is all zero is not present
            shown = set(nonempty_classes(classes, cams))
            keep = [i for i, c in enumerate(classes) if c in shown]
            classes, raw, cams = [classes[i] for i in keep], raw[keep], cams[keep]
        out.append(CamResult(classes=classes, cams=cams, scores=scores, raw=raw))
    return out
