"""The shared multi-scale CAM code (seam.common.cam + torch_runner) against an
independent re-implementation of the authors' infer_SEAM, written here the way the
release runs it: one pass at a time, the network's own upsampling, then
F.interpolate to the original size."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from seam.common.cam import MultiScaleConfig, multiscale_cam
from training.inference.cam import torch_runner
from training.models.registry import create_model

MEAN = np.array([0.485, 0.456, 0.406], np.float32)
STD = np.array([0.229, 0.224, 0.225], np.float32)
SCALES = (0.5, 1.0, 1.5, 2.0)
NUM_FG = 6


def authors_infer_seam(model: torch.nn.Module, img: Image.Image, label: np.ndarray,
                       scales=SCALES) -> dict[int, np.ndarray]:
    """infer_SEAM.py for one image: {fg class: HxW float32} for the labelled classes."""
    W, H = img.size
    passes = []
    for s in scales:
        im = img.resize((round(W * s), round(H * s)), resample=Image.BICUBIC)
        arr = (np.asarray(im, np.float32) / 255.0 - MEAN) / STD
        chw = np.ascontiguousarray(arr.transpose(2, 0, 1))
        passes += [chw, np.flip(chw, -1).copy()]
    cams = []
    with torch.no_grad():
        for i, x in enumerate(passes):
            _, cam = model(torch.from_numpy(x)[None])  # cam_rv upsampled, align_corners=True
            cam = F.interpolate(cam[:, 1:, :, :], (H, W), mode="bilinear", align_corners=False)[0]
            cam = cam.numpy() * label.reshape(-1, 1, 1)
            if i % 2 == 1:
                cam = np.flip(cam, axis=-1)
            cams.append(cam)
    sum_cam = np.sum(cams, axis=0)
    sum_cam[sum_cam < 0] = 0
    cam_max = np.max(sum_cam, (1, 2), keepdims=True)
    cam_min = np.min(sum_cam, (1, 2), keepdims=True)
    sum_cam[sum_cam < cam_min + 1e-5] = 0
    norm_cam = (sum_cam - cam_min - 1e-5) / (cam_max - cam_min + 1e-5)
    return {i: norm_cam[i] for i in range(len(label)) if label[i] > 1e-5}


@pytest.fixture(scope="module")
def net() -> torch.nn.Module:
    torch.manual_seed(0)
    return create_model("seam", "resnet38_small", NUM_FG + 1).eval()


@pytest.mark.parametrize("hw,labels", [((37, 61), [1, 4]), ((45, 29), [0]), ((51, 67), [2, 3, 5])])
def test_shared_cam_equals_authors_infer_seam(net, hw, labels):
    rng = np.random.default_rng(hw[0])
    rgb = rng.integers(0, 256, (*hw, 3), dtype=np.uint8)
    label = np.zeros(NUM_FG, np.float32)
    label[labels] = 1
    ref = authors_infer_seam(net, Image.fromarray(rgb), label)
    res = multiscale_cam(rgb, torch_runner(net), labels, MultiScaleConfig(scales=SCALES, flip=True, refined=True))
    got = res.as_dict()
    assert sorted(got) == sorted(ref) == labels
    for c in labels:
        assert got[c].shape == hw
        assert ref[c].max() > 0.5  # a real map, not an all-zero one on both sides
        np.testing.assert_allclose(got[c], ref[c], atol=1e-3, rtol=0)
