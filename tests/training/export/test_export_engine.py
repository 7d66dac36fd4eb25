"""Exported models in the onnxruntime engine give what the torch path gives: CAM files
of `seam cam --engine onnx` vs `--engine torch`, the random walk with an exported
AffinityNet, and DeepLab probabilities."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from seam.service.engine.onnx_engine import OnnxEngine
from seam.training.evaluation.evaluate import load_cams
from seam.training.export import export_model
from seam.training.inference.cam import torch_runner
from typer.testing import CliRunner

from seam.cli import app
from seam.common.cam import MultiScaleConfig, multiscale_cam
from seam.common.image import Normalization
from seam.common.random_walk import random_walk_labels
from testkit.checkpoints import CLASSES, make_checkpoint

SIZES = [(37, 61), (200, 133), (45, 29)]
# Every test here exports through torch.onnx (dynamo): seconds each, so out of the fast loop;
# .ci/run runs them.
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    d = tmp_path_factory.mktemp("repo")
    nets = {}
    for kind, seed in (("seam", 0), ("affinity", 1), ("deeplab", 2)):
        ckpt = d / f"{kind}.pth"
        nets[kind] = make_checkpoint(ckpt, kind=kind, seed=seed, sidecar={"class_names": CLASSES})
        export_model(ckpt, kind, f"{kind}-small", d / "models", check_shapes=[(1, 3, 37, 61)])
    engine = OnnxEngine(d / "models", threads=2)
    return d, nets, engine


def images(n: int = 3) -> list[np.ndarray]:
    rng = np.random.default_rng(7)
    return [rng.integers(0, 256, (*hw, 3), dtype=np.uint8) for hw in SIZES[:n]]


def test_engine_methods(repo):
    _, _, engine = repo
    assert engine.methods() == ["deeplab", "rw", "pcm", "cam"]
    assert engine.foreground_classes() == CLASSES[1:]


@pytest.mark.parametrize("refined", [True, False])
def test_engine_cam_equals_torch_path(repo, refined):
    _, nets, engine = repo
    runner = torch_runner(nets["seam"])
    for rgb in images():
        cfg = MultiScaleConfig(refined=refined)
        ref = multiscale_cam(rgb, runner, [0, 2], cfg)
        got = engine.cam(rgb, [0, 2], refined=refined)
        np.testing.assert_allclose(got.cams, ref.cams, atol=1e-3, rtol=0)
        ref_pred = multiscale_cam(rgb, runner, None, cfg)
        np.testing.assert_allclose(engine.cam(rgb, None, refined=refined).scores, ref_pred.scores, atol=1e-4)


def test_cam_files_onnx_equal_torch(repo, tmp_path):
    d, _, _ = repo
    img_dir = tmp_path / "images"
    img_dir.mkdir()
    for i, rgb in enumerate(images()):
        Image.fromarray(rgb).save(img_dir / f"img{i}.png")
    labels = tmp_path / "labels.json"
    labels.write_text(json.dumps({"img0": ["circle"], "img1": ["square", "triangle"], "img2": [0, 1, 2]}))
    runner = CliRunner()
    common = ["cam", "--images", str(img_dir), "--labels", str(labels), "--save-png"]
    r1 = runner.invoke(app, [*common, "--out", str(tmp_path / "torch"), "--checkpoint", str(d / "seam.pth")])
    assert r1.exit_code == 0, r1.output
    r2 = runner.invoke(app, [*common, "--out", str(tmp_path / "onnx"), "--engine", "onnx",
                             "--model", str(d / "models" / "seam-small")])
    assert r2.exit_code == 0, r2.output
    for i in range(3):  # seam cam's default files: pickle-free npz
        ca, a = load_cams(tmp_path / "torch" / f"img{i}.npz")
        cb, b = load_cams(tmp_path / "onnx" / f"img{i}.npz")
        assert ca == cb and ca
        assert b.dtype == np.float32 and b.shape == (len(cb), *SIZES[i])
        np.testing.assert_allclose(b, a, atol=1e-3, rtol=0)
        pa = np.asarray(Image.open(tmp_path / "torch" / f"img{i}.png"))
        pb = np.asarray(Image.open(tmp_path / "onnx" / f"img{i}.png"))
        assert (pa == pb).mean() > 0.999


def test_random_walk_equals_torch_features(repo):
    _, nets, engine = repo
    aff = nets["affinity"]
    for rgb in images(2):
        H, W = rgb.shape[:2]
        res = engine.segment(rgb, [0, 1], method="rw")
        x = torch.from_numpy(Normalization()(rgb))[None]
        x = F.pad(x, (0, -(-W // 8) * 8 - W, 0, -(-H // 8) * 8 - H))
        with torch.no_grad():
            feat = aff(x)[0].numpy()
        ref = random_walk_labels(feat, res.cams.cams, res.cams.classes, (H, W))
        assert (res.label == ref).mean() > 0.999


def test_deeplab_equals_torch(repo):
    _, nets, engine = repo
    net = nets["deeplab"]
    rgb = images(1)[0]
    H, W = rgb.shape[:2]
    with torch.no_grad():
        logits = net(torch.from_numpy(Normalization()(rgb))[None])
        probs = F.softmax(F.interpolate(logits, (H, W), mode="bilinear", align_corners=False), dim=1)[0].numpy()
    res = engine.segment(rgb, method="deeplab")
    np.testing.assert_allclose(res.scores, probs[1:].reshape(3, -1).max(1), atol=1e-4)
    assert (res.label == probs.argmax(0)).mean() > 0.999
