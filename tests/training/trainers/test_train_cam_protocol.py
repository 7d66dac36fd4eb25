"""Table 1's raw-CAM rows are scored as psa's infer_cls.py computes raw CAMs (relu per pass,
upsample from stride 8 with align_corners=False, labels, flips undone, sum, divide by the
max), checked against an independent torch computation; and they differ from the PCM path's
min-max normalisation."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from seam.training.trainers.cam_eval import release_raw_cam

from seam.common.cam import normalize_cams
from seam.common.image import Normalization


def _runner(seed=0, C=5):
    """A fake network: a fixed random 1x1 conv on the input average-pooled by 8 (stride 8)."""
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(C, 3, 1, 1, generator=g)

    def run(batch):
        x = torch.from_numpy(batch)
        cam8 = F.conv2d(F.avg_pool2d(x, 8, ceil_mode=True), w) + 1.5  # some maps keep a positive floor
        return cam8.numpy(), cam8.numpy()

    return run, w


def test_release_raw_cam_equals_infer_cls_by_torch():
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 255, size=(37, 53, 3), dtype=np.uint8)
    runner, _ = _runner()
    labels = [1, 3]
    scales = (1.0, 0.5, 1.5)
    got = release_raw_cam(rgb, runner, labels, scales)
    assert sorted(got) == labels

    norm = Normalization()
    H, W = rgb.shape[:2]
    total = torch.zeros(4, H, W)
    for s in scales:
        size = (round(W * s), round(H * s))  # PIL (w, h), infer_cls's VOC12ClsDatasetMSF
        img = np.asarray(Image.fromarray(rgb).resize(size, Image.BICUBIC))
        x = torch.from_numpy(norm(img).copy())
        for flip in (False, True):
            xi = x.flip(-1) if flip else x
            cam, _ = runner(xi[None].numpy())
            cam = F.relu(torch.from_numpy(cam))[:, 1:]  # forward_cam: relu(fc8(x)); fg channels
            cam = F.interpolate(cam, (H, W), mode="bilinear", align_corners=False)[0]
            lab = torch.zeros(4)
            lab[labels] = 1
            cam = cam * lab[:, None, None]
            total += cam.flip(-1) if flip else cam
    ref = total / (total.amax(dim=(1, 2), keepdim=True) + 1e-5)
    for c in labels:
        np.testing.assert_allclose(got[c], ref[c].numpy(), rtol=1e-4, atol=1e-5)
        assert got[c].max() > 0.99  # the max is ~1 ...
    # ... and the minimum is not subtracted: the PCM path's min-max gives other maps
    raw = total[labels].numpy()
    assert not np.allclose(normalize_cams(raw), np.stack([got[c] for c in labels]), atol=1e-3)


def test_release_raw_cam_without_labels_is_empty():
    runner, _ = _runner()
    assert release_raw_cam(np.zeros((16, 16, 3), np.uint8), runner, []) == {}


def test_class_prediction_scores_by_hand():
    from seam.training.evaluation.class_prediction import ImageResult, choose_threshold, score

    names = ["background", "a", "b"]
    gt1 = np.zeros((4, 4), np.uint8)
    gt1[:2, :2] = 1  # class a (fg index 0)
    gt2 = np.zeros((4, 4), np.uint8)
    gt2[2:, 2:] = 2  # class b (fg index 1)
    cam_a = np.zeros((4, 4), np.float32)
    cam_a[:2, :2] = 1.0
    cam_b = np.zeros((4, 4), np.float32)
    cam_b[2:, 2:] = 1.0
    cams = np.stack([cam_a, cam_b])
    r1 = ImageResult({0}, np.array([0.9, 0.4], np.float32), cams, gt1)  # right at 0.5, b too at 0.3
    r2 = ImageResult({1}, np.array([0.2, 0.45], np.float32), cams, gt2)  # b missed at 0.5
    s = score([r1, r2], names, 0.5)
    assert (s["tp"], s["fp"], s["fn"], s["no_class_found"]) == (1, 0, 1, 1)
    assert s["precision"] == 1.0 and s["recall"] == 0.5
    # image 1 perfect (IoU 1 for bg and a); image 2 all background -> b IoU 0
    # bg: TP 12 + 12, FP (image 2's b pixels) 4 -> 24 / 28
    assert s["miou"] == pytest.approx(100 * (24 / 28 + 1.0 + 0.0) / 3, rel=1e-6)
    s = score([r1, r2], names, 0.3)
    assert (s["tp"], s["fp"], s["fn"]) == (2, 1, 0)
    best, rows = choose_threshold([r1, r2], names, grid=(0.3, 0.42, 0.5))
    assert best == 0.42  # a in image 1, b in image 2, nothing else: precision = recall = 1
