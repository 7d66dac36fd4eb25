"""AffinityNet training labels from SEAM CAMs (numpy).

The authors (`infer_SEAM.py` + `VOC12AffDataset`) keep two dicts of CRF posteriors per
image: "la" from [(1 - max CAM)^4, CAMs] (low alpha: background score high, so only
confident foreground survives) and "ha" from [(1 - max CAM)^24, CAMs] (high alpha:
only confident background survives). At training time they crop both, average-pool
by 8 and set label = argmax(la); where argmax(la) is background -> 255 (unknown);
where argmax(ha) is background -> 0.

We store both per image: <id>.npz with the two posteriors (float32, channel 0 =
background, channel i+1 = the image's i-th class; `write_scores` / `read_scores`),
which the training crops and reduces exactly as the release (`stride_labels_from_scores`:
average-pool by 8, argmax, combine; zero-score blocks of crop padding -> 255), and
<id>.png, the same rule applied per pixel to the posteriors' argmaxes, for viewing and
for label sets that come without scores:

    0     argmax(ha) == background                 (confident background)
    c+1   argmax(la) == c+1 and argmax(ha) != bg    (confident foreground class c)
    255   argmax(la) == bg and argmax(ha) != bg     (unknown)

`stride_labels` reduces such hard labels to stride 8 by voting (for PNG-only label
sets): in each 8x8 block, la votes are [n0 + n255, n1, ..., nC] and ha votes are
[n0, everything else], ties going to background as np.argmax does; blocks made only
of crop padding are 255. It is not the release's rule where soft posteriors or
several classes meet in a block (0.3 % of cells on synthetic posteriors differ), which
is why the training reads the scores when they are there.

Pairs (`pair_labels`) are the release's `ExtractAffinityLabelInRadius`: for the
source window and offsets of `seam.common.random_walk.source_windows`,
bg-positive = both 0; fg-positive = same class, not 0, both valid; negative =
different classes, both valid (valid = label < 255).
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from seam.common.random_walk import DEFAULT_RADIUS, OUTPUT_STRIDE, source_windows

LA_ALPHA = 4.0  # confident foreground
HA_ALPHA = 24.0  # confident background
IGNORE = 255
PAD = -1  # crop padding in int16 label crops: no score at all


def combine_la_ha(la: np.ndarray, ha: np.ndarray) -> np.ndarray:
    """Per-pixel label rule on argmax maps (0 = bg, c+1 = class c) -> uint8 (H, W)."""
    out = la.astype(np.uint8).copy()
    out[la == 0] = IGNORE
    out[ha == 0] = 0
    return out


def class_table(classes: Sequence[int]) -> np.ndarray:
    """Channel index -> stored label: 0 -> 0, i -> classes[i-1] + 1, IGNORE -> IGNORE (uint8, 256)."""
    lut = np.arange(256, dtype=np.uint8)
    lut[1:len(classes) + 1] = [int(c) + 1 for c in classes]
    return lut


def affinity_scores(rgb: np.ndarray, cams: np.ndarray, classes: Sequence[int], la_alpha: float = LA_ALPHA,
                    ha_alpha: float = HA_ALPHA, crf: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """The release's la and ha posteriors (K+1, H, W) float32 of one image from its fg CAMs
    (K, H, W): dense CRF on [(1 - max CAM)^alpha, CAMs]. crf=False keeps the raw scores
    (tests, machines without pydensecrf). No classes: background 1 everywhere."""
    cams = np.asarray(cams, dtype=np.float32)
    if len(classes) == 0:
        ones = np.ones((1, *rgb.shape[:2]), np.float32)
        return ones, ones.copy()
    if crf:
        from seam.common.crf import crf_affinity_labels

        return (crf_affinity_labels(rgb, cams, classes, la_alpha).astype(np.float32),
                crf_affinity_labels(rgb, cams, classes, ha_alpha).astype(np.float32))
    from seam.common.cam import background_score

    return (np.concatenate([background_score(cams, la_alpha)[None], cams]),
            np.concatenate([background_score(cams, ha_alpha)[None], cams]))


def scores_label_map(la: np.ndarray, ha: np.ndarray, classes: Sequence[int]) -> np.ndarray:
    """The per-pixel label rule on la / ha posteriors -> stored-format (H, W) uint8."""
    return class_table(classes)[combine_la_ha(la.argmax(axis=0), ha.argmax(axis=0))]


def affinity_label_map(rgb: np.ndarray, cams: np.ndarray, classes: Sequence[int],
                       la_alpha: float = LA_ALPHA, ha_alpha: float = HA_ALPHA, crf: bool = True) -> np.ndarray:
    """One image's stored AffinityNet label (H, W) uint8 from its fg CAMs (K, H, W)."""
    return scores_label_map(*affinity_scores(rgb, cams, classes, la_alpha, ha_alpha, crf), classes)


def write_scores(path: Path, la: np.ndarray, ha: np.ndarray, classes: Sequence[int]) -> None:
    """<id>.npz: la, ha (K+1, H, W) float32 and the classes of their channels 1..K."""
    tmp = path.with_name(path.stem + ".tmp.npz")
    np.savez_compressed(tmp, la=la.astype(np.float32), ha=ha.astype(np.float32),
                        classes=np.asarray(classes, np.int64))
    tmp.replace(path)


def read_scores(path: Path) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """(la, ha, classes) as `write_scores` stored them."""
    with np.load(path) as z:
        la, ha, classes = z["la"], z["ha"], [int(c) for c in z["classes"]]
    if la.shape != ha.shape or la.ndim != 3 or la.shape[0] != len(classes) + 1:
        raise ValueError(f"{path}: la {la.shape} / ha {ha.shape} do not fit {len(classes)} classes")
    return la, ha, classes


def stride_labels(label: np.ndarray, stride: int = OUTPUT_STRIDE) -> np.ndarray:
    """Stored-format labels (H, W) -> (H/stride, W/stride) uint8 training labels.

    `label` may be int with PAD (-1) marking crop padding; H, W must be multiples of
    `stride`.
    """
    H, W = label.shape
    if H % stride or W % stride:
        raise ValueError(f"label size {H}x{W} is not a multiple of {stride}")
    blocks = label.astype(np.int16).reshape(H // stride, stride, W // stride, stride)
    n0 = (blocks == 0).sum(axis=(1, 3))
    n_unknown = (blocks == IGNORE).sum(axis=(1, 3))
    n_valid = (blocks != PAD).sum(axis=(1, 3))
    fg_values = [int(v) for v in np.unique(label) if 0 < v < IGNORE]
    la_best = np.zeros(n0.shape, np.uint8)  # background unless a fg class out-votes it
    la_votes = n0 + n_unknown
    for v in fg_values:
        nv = (blocks == v).sum(axis=(1, 3))
        win = nv > la_votes
        la_best[win] = v
        la_votes = np.where(win, nv, la_votes)
    out = la_best.copy()
    out[la_best == 0] = IGNORE
    ha_bg = n0 >= n_valid - n0
    out[ha_bg] = 0
    out[n_valid == 0] = IGNORE
    return out


def stride_labels_from_scores(la: np.ndarray, ha: np.ndarray, stride: int = OUTPUT_STRIDE) -> np.ndarray:
    """The release's rule on float posteriors (C, H, W) (channel 0 = bg, zero in crop
    padding): average-pool by `stride`, argmax, combine; all-zero blocks -> 255.
    Channel indices are returned as labels (map them through `class_table`)."""
    def pool(x: np.ndarray) -> np.ndarray:
        c, H, W = x.shape
        return x.reshape(c, H // stride, stride, W // stride, stride).mean(axis=(2, 4))

    pla, pha = pool(la.astype(np.float32)), pool(ha.astype(np.float32))
    no_score = np.maximum(pla.max(axis=0), pha.max(axis=0)) < 1e-5
    out = combine_la_ha(pla.argmax(axis=0), pha.argmax(axis=0))
    out[no_score] = IGNORE
    return out


def pair_labels(label8: np.ndarray, radius: int = DEFAULT_RADIUS) -> np.ndarray:
    """(h, w) stride-8 labels -> (3, P, N) float32: bg-positive, fg-positive, negative
    pair indicators for P offsets x N source pixels (order of `pair_affinity`)."""
    h, w = label8.shape
    wins = source_windows(h, w, radius, full=False)
    if not wins:
        raise ValueError(f"label map {h}x{w} is too small for radius {radius}")
    _, _, y0, y1, x0, x1 = wins[0]
    src = label8[y0:y1, x0:x1].reshape(1, -1)
    dst = np.stack([label8[y0 + dy:y1 + dy, x0 + dx:x1 + dx].reshape(-1) for dy, dx, *_ in wins])
    valid = (src < IGNORE) & (dst < IGNORE)
    same = src == dst
    bg = same & (src == 0)
    fg = same & (src != 0) & valid
    neg = ~same & valid
    return np.stack([bg, fg, neg]).astype(np.float32)
