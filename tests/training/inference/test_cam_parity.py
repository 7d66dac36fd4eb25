"""The shared multi-scale CAM code (seam.common.cam + torch_runner) against an
independent re-implementation of the authors' infer_SEAM (`testkit/authors_cam.py`),
written the way the release runs it: one pass at a time, the network's own upsampling,
then F.interpolate to the original size."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from seam.training.inference.cam import torch_runner
from seam.training.models.registry import create_model

from seam.common.cam import MultiScaleConfig, multiscale_cam
from testkit.authors_cam import authors_infer_seam

SCALES = (0.5, 1.0, 1.5, 2.0)
NUM_FG = 6


@pytest.fixture(scope="module")
def net() -> torch.nn.Module:
    torch.manual_seed(1)  # a random network whose refined maps are non-zero for every tested class
    return create_model("seam", "resnet38_small", NUM_FG + 1).eval()


@pytest.mark.slow  # seconds of CPU each: out of the fast loop (under a minute), CI runs it
@pytest.mark.parametrize("hw,labels", [((37, 61), [1, 4]), ((45, 29), [0]), ((51, 67), [2, 3, 5])])
def test_shared_cam_equals_authors_infer_seam(net, hw, labels):
    rng = np.random.default_rng(hw[0])
    rgb = rng.integers(0, 256, (*hw, 3), dtype=np.uint8)
    label = np.zeros(NUM_FG, np.float32)
    label[labels] = 1
    maps = authors_infer_seam(net, rgb, label, SCALES)
    ref = {i: maps[i] for i in range(len(label)) if label[i] > 1e-5}
    res = multiscale_cam(rgb, torch_runner(net), labels, MultiScaleConfig(scales=SCALES, flip=True, refined=True))
    got = res.as_dict()
    assert sorted(got) == sorted(ref) == labels
    for c in labels:
        assert got[c].shape == hw
        assert ref[c].max() > 0.5  # a real map, not an all-zero one on both sides
        np.testing.assert_allclose(got[c], ref[c], atol=1e-3, rtol=0)
