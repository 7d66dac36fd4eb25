"""Table 1's raw-CAM rows are scored as psa's infer_cls.py computes raw CAMs (relu per pass,
upsample from stride 8 with align_corners=False, labels, flips undone, sum, divide by the
max), checked against an independent torch computation; and they differ from the PCM path's
min-max normalisation."""
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from seam.common.cam import normalize_cams
from seam.common.image import Normalization
from training.engine.cam_eval import release_raw_cam


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
