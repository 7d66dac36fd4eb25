"""Dense CRF wrappers (pydensecrf2)."""
from __future__ import annotations

import sys

import numpy as np
import pytest

pytest.importorskip("pydensecrf.densecrf")

from seam.common.cam import cams_to_label  # noqa: E402
from seam.common.crf import crf_affinity_labels, crf_refine_cams, dense_crf  # noqa: E402


def _two_regions(seed: int = 0):
    """Dark left half, bright right half, with pixel noise; probabilities slightly favour
    the true side everywhere except a small square where they are confidently wrong."""
    rng = np.random.default_rng(seed)
    h, w = 48, 64
    truth = np.zeros((h, w), np.int64)
    truth[:, w // 2:] = 1
    rgb = np.where(truth[..., None] == 1, 200, 40) + rng.normal(0, 12, (h, w, 3))
    rgb = np.clip(rgb, 0, 255).astype(np.uint8)
    p1 = np.where(truth == 1, 0.65, 0.35) + rng.uniform(-0.1, 0.1, (h, w))
    p1[20:26, 8:14] = 0.9  # confident but wrong patch inside the dark region
    probs = np.stack([1 - p1, p1]).astype(np.float32)
    return rgb, probs, truth


def test_shape_and_normalised():
    rgb, probs, _ = _two_regions()
    q = dense_crf(rgb, probs)
    assert q.shape == probs.shape and q.dtype == np.float32
    np.testing.assert_allclose(q.sum(0), 1.0, atol=1e-4)
    assert q.min() >= 0


def test_cleans_wrong_patch():
    rgb, probs, truth = _two_regions()
    before = probs.argmax(0)
    assert np.all(before[20:26, 8:14] == 1)  # the patch is wrong before the CRF
    after = dense_crf(rgb, probs).argmax(0)
    assert np.mean(after[20:26, 8:14] == 0) > 0.9
    assert np.mean(after == truth) > 0.995 > np.mean(before == truth)


def test_refine_cams_labels():
    rgb, probs, truth = _two_regions()
    cams = probs[1:2]  # one foreground class, index 6 -> label 7
    lab = crf_refine_cams(rgb, cams, [6], threshold=0.5)
    assert lab.dtype == np.uint8 and lab.shape == truth.shape
    assert set(np.unique(lab)) <= {0, 7}
    assert np.mean((lab == 7) == (truth == 1)) > 0.98
    raw = cams_to_label(cams, [6], 0.5)
    assert np.mean((raw == 7) == (truth == 1)) < np.mean((lab == 7) == (truth == 1))
    assert not crf_refine_cams(rgb, np.zeros((0, 48, 64), np.float32), [], 0.3).any()


def test_affinity_labels():
    rgb, probs, _ = _two_regions()
    cams = np.stack([probs[1], probs[1] * 0.5])
    q = crf_affinity_labels(rgb, cams, [2, 5], alpha=4)
    assert q.shape == (3, 48, 64)
    np.testing.assert_allclose(q.sum(0), 1.0, atol=1e-4)
    with pytest.raises(ValueError):
        crf_affinity_labels(rgb, cams, [2], alpha=4)


def test_bad_shapes_and_missing_package(monkeypatch):
    rgb, probs, _ = _two_regions()
    with pytest.raises(ValueError):
        dense_crf(rgb[:10], probs)
    with pytest.raises(ValueError):
        dense_crf(rgb.astype(np.float32), probs)
    monkeypatch.setitem(sys.modules, "pydensecrf.densecrf", None)
    with pytest.raises(RuntimeError, match="pip install pydensecrf2"):
        dense_crf(rgb, probs)
