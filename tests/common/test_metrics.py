"""Confusion matrices and scores against hand-computed and set-based references."""
from __future__ import annotations

import numpy as np
import pytest

from seam.common.metrics import ConfusionMeter, confusion_matrix, scores_from_confusion

NAMES3 = ("background", "a", "b")


def test_hand_computed_confusion_with_ignore():
    gt = np.array([[0, 0, 1], [1, 2, 255]])
    pred = np.array([[0, 1, 1], [2, 2, 0]])
    # (gt, pred) pairs: (0,0) (0,1) (1,1) (1,2) (2,2); the 255 pixel is skipped
    expected = np.array([[1, 1, 0], [0, 1, 1], [0, 0, 1]])
    conf = confusion_matrix(pred, gt, 3)
    assert conf.dtype == np.int64
    np.testing.assert_array_equal(conf, expected)


def test_hand_computed_scores():
    conf = np.array([[1, 1, 0], [0, 1, 1], [0, 0, 1]])
    s = scores_from_confusion(conf, NAMES3)
    # IoU: bg 1/(2+1-1)=1/2, a 1/(2+2-1)=1/3, b 1/(1+2-1)=1/2
    assert s["per_class"]["background"] == pytest.approx(50.0)
    assert s["per_class"]["a"] == pytest.approx(100 / 3)
    assert s["per_class"]["b"] == pytest.approx(50.0)
    assert s["miou"] == pytest.approx((50 + 100 / 3 + 50) / 3)
    # m_FN = mean(FN_a/TP_a, FN_b/TP_b) = mean(1/1, 0/1); m_FP = mean(1/1, 1/1)
    assert s["mfn"] == pytest.approx(0.5)
    assert s["mfp"] == pytest.approx(1.0)
    assert s["pixel_acc"] == pytest.approx(60.0)


def test_absent_class_excluded_and_zero_tp_skipped():
    # class "b" never occurs in GT nor prediction -> no IoU, left out of the mean
    conf = np.array([[4, 2, 0], [1, 3, 0], [0, 0, 0]])
    s = scores_from_confusion(conf, NAMES3)
    assert s["per_class"]["b"] is None
    iou_bg, iou_a = 4 / (6 + 5 - 4), 3 / (4 + 5 - 3)
    assert s["miou"] == pytest.approx(100 * (iou_bg + iou_a) / 2)
    assert s["mfn"] == pytest.approx(1 / 3)  # only "a": FN 1 / TP 3
    assert s["mfp"] == pytest.approx(2 / 3)
    # "b" in GT but never hit: IoU 0 counts in the mean, m_FN/m_FP skip it (TP = 0)
    conf2 = np.array([[4, 2, 0], [1, 3, 0], [2, 0, 0]])
    s2 = scores_from_confusion(conf2, NAMES3)
    assert s2["per_class"]["b"] == 0.0
    assert s2["miou"] == pytest.approx(100 * (4 / (6 + 7 - 4) + iou_a + 0) / 3)
    assert s2["mfn"] == pytest.approx(1 / 3)
    # no foreground TP at all -> None
    s3 = scores_from_confusion(np.array([[5, 1], [2, 0]]), ("background", "a"))
    assert s3["mfn"] is None and s3["mfp"] is None


def _set_based_miou(preds, gts, num_classes, ignore=255):
    """Independent reference: IoU from Python sets of (image, pixel) positions."""
    ious = []
    for c in range(num_classes):
        p_set, g_set = set(), set()
        for k, (p, g) in enumerate(zip(preds, gts, strict=True)):
            valid = g.ravel() != ignore
            p_set |= {(k, i) for i in np.flatnonzero((p.ravel() == c) & valid)}
            g_set |= {(k, i) for i in np.flatnonzero(g.ravel() == c)}
        union = p_set | g_set
        if union:
            ious.append(len(p_set & g_set) / len(union))
    return 100 * float(np.mean(ious))


def test_meter_matches_set_based_miou():
    rng = np.random.default_rng(3)
    c = 4
    preds, gts = [], []
    meter = ConfusionMeter(c)
    for _ in range(5):
        h, w = rng.integers(5, 20, 2)
        g = rng.integers(0, c, (h, w))
        g[rng.random((h, w)) < 0.1] = 255
        p = np.where(rng.random((h, w)) < 0.6, np.where(g == 255, 0, g), rng.integers(0, c, (h, w)))
        preds.append(p)
        gts.append(g)
        meter.update(p, g)
    s = meter.scores(["bg", "x", "y", "z"])
    assert abs(s["miou"] - _set_based_miou(preds, gts, c)) < 0.01
    np.testing.assert_array_equal(
        meter.matrix, confusion_matrix(np.concatenate([p.ravel() for p in preds]),
                                       np.concatenate([g.ravel() for g in gts]), c))
    meter.reset()
    assert meter.matrix.sum() == 0


def test_bad_inputs():
    with pytest.raises(ValueError, match="shape"):
        confusion_matrix(np.zeros((2, 2)), np.zeros((2, 3)), 3)
    with pytest.raises(ValueError, match="prediction holds label 7"):
        confusion_matrix(np.full((2, 2), 7), np.zeros((2, 2)), 3)
    with pytest.raises(ValueError, match="ground truth holds label 5"):
        confusion_matrix(np.zeros((2, 2)), np.full((2, 2), 5), 3)
    with pytest.raises(ValueError, match="class names"):
        scores_from_confusion(np.eye(3), ("a", "b"))
