"""Segmentation metrics: confusion matrices, IoU and the paper's m_FN / m_FP.

numpy only, so the evaluation CLI, training and the service share one definition.
Rows of every confusion matrix are ground truth, columns are predictions.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from seam.common.classes import IGNORE_INDEX


def confusion_matrix(
    pred: np.ndarray, gt: np.ndarray, num_classes: int, ignore_index: int = IGNORE_INDEX
) -> np.ndarray:
    """(num_classes, num_classes) int64 counts, rows = ground truth, cols = prediction.

    Pixels whose ground truth is `ignore_index` are skipped. Any other value outside
    0..num_classes-1, in either map, raises ValueError: a silent drop would inflate
    the scores, and a CxC matrix has no cell to count it in.
    """
    pred = np.asarray(pred)
    gt = np.asarray(gt)
    if pred.shape != gt.shape:
        raise ValueError(f"prediction shape {pred.shape} differs from ground truth shape {gt.shape}")
    valid = gt != ignore_index
    g = gt[valid].astype(np.int64, copy=False)
    p = pred[valid].astype(np.int64, copy=False)
    for name, arr in (("ground truth", g), ("prediction", p)):
        if arr.size and (arr.min() < 0 or arr.max() >= num_classes):
            bad = arr[(arr < 0) | (arr >= num_classes)][0]
            raise ValueError(f"{name} holds label {bad}, outside 0..{num_classes - 1} (and not ignore {ignore_index})")
    counts = np.bincount(g * num_classes + p, minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes).astype(np.int64, copy=False)


class ConfusionMeter:
    """Accumulates confusion counts over many images."""

    def __init__(self, num_classes: int, ignore_index: int = IGNORE_INDEX) -> None:
        if num_classes < 2:
            raise ValueError(f"need at least 2 classes (background + one), got {num_classes}")
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.matrix = np.zeros((num_classes, num_classes), dtype=np.int64)

    def update(self, pred: np.ndarray, gt: np.ndarray) -> None:
        self.matrix += confusion_matrix(pred, gt, self.num_classes, self.ignore_index)

    def add(self, conf: np.ndarray) -> None:
        """Add an already computed matrix (e.g. from a worker)."""
        if conf.shape != self.matrix.shape:
            raise ValueError(f"confusion matrix shape {conf.shape} != {self.matrix.shape}")
        self.matrix += conf.astype(np.int64, copy=False)

    def reset(self) -> None:
        self.matrix[:] = 0

    def scores(self, class_names: Sequence[str]) -> dict[str, Any]:
        return scores_from_confusion(self.matrix, class_names)


def scores_from_confusion(conf: np.ndarray, class_names: Sequence[str]) -> dict[str, Any]:
    """mIoU and friends from an accumulated confusion matrix.

    - `miou` (percent): mean of IoU_c = TP/(T+P-TP) over all classes, background
      included, as the authors' evaluation. A class that appears neither in the
      ground truth nor in the predictions (T+P-TP == 0) has no IoU: it is left out
      of the mean and reported as None in `per_class`.
    - `mfn`, `mfp` (ratios, not percent): the paper's eq. 13-14, the mean over
      foreground classes 1..C-1 of FN_c/TP_c and FP_c/TP_c. Classes with TP_c == 0
      are skipped (the ratio is undefined); None when no class is left.
    - `pixel_acc` (percent): correctly labelled / all counted pixels.
    """
    conf = np.asarray(conf, dtype=np.int64)
    c = conf.shape[0]
    if conf.shape != (c, c):
        raise ValueError(f"confusion matrix must be square, got {conf.shape}")
    if len(class_names) != c:
        raise ValueError(f"{len(class_names)} class names for a {c}x{c} confusion matrix")
    tp = np.diag(conf).astype(np.float64)
    t = conf.sum(axis=1).astype(np.float64)  # ground-truth pixels per class
    p = conf.sum(axis=0).astype(np.float64)  # predicted pixels per class
    union = t + p - tp
    has_iou = union > 0
    iou = np.divide(tp, union, out=np.zeros_like(tp), where=has_iou)
    fg_ok = tp[1:] > 0
    fn_ratio = (t[1:] - tp[1:])[fg_ok] / tp[1:][fg_ok]
    fp_ratio = (p[1:] - tp[1:])[fg_ok] / tp[1:][fg_ok]
    total = conf.sum()
    return {
        "miou": float(iou[has_iou].mean() * 100) if has_iou.any() else 0.0,
        "per_class": {
            name: (float(iou[i] * 100) if has_iou[i] else None) for i, name in enumerate(class_names)
        },
        "mfn": float(fn_ratio.mean()) if fn_ratio.size else None,
        "mfp": float(fp_ratio.mean()) if fp_ratio.size else None,
        "pixel_acc": float(tp.sum() / total * 100) if total else 0.0,
        "num_pixels": int(total),
    }
