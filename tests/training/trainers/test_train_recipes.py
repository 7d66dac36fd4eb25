"""Recipes (release | tuned) for SEAM, AffinityNet and DeepLab; the authors' DeepLab run
(BN on batch statistics, every conv trained, iteration count, key names, test protocol)."""
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from seam.training.data.datasets import default_recipe
from seam.training.data.synth import generate
from seam.training.inference.segment import DEFAULT_SEG_SCALES, SEG_CRF, segment_probs
from seam.training.models.deeplab import DeepLabLargeFOV, from_authors_state_dict, is_authors_state_dict
from seam.training.models.registry import create_model
from seam.training.pipeline import PipelineConfig
from seam.training.trainers.affinity import AffinityTrainConfig
from seam.training.trainers.deeplab import DEEPLAB_FINAL, DeepLabTrainConfig, train_deeplab
from seam.training.trainers.recipes import recipe_settings
from seam.training.trainers.schedule import AUTHORS_MOMENTUM
from seam.training.trainers.seam import TrainConfig
from typer.testing import CliRunner

from tests.training.helpers import tiny_set


def test_release_and_tuned_values():
    rel = recipe_settings("seam", "release")
    assert (rel["momentum"], rel["weight_decay"], rel["lr"], rel["batch_size"], rel["epochs"], rel["crop"],
            rel["amp"], rel["cam_norm"]) == (5e-4, 5e-4, 0.01, 8, 8, 448, False, "minmax")
    tuned = recipe_settings("seam", "tuned")
    assert tuned["momentum"] == 0.9 and tuned["amp"] is None
    assert {k for k in rel if rel[k] != tuned[k]} == {"momentum", "amp"}
    aff = recipe_settings("affinity", "release")
    assert (aff["lr"], aff["momentum"], aff["batch_size"], aff["epochs"]) == (0.01, AUTHORS_MOMENTUM, 8, 8)
    assert default_recipe("voc") == "release" and default_recipe("synth") == "release"
    assert default_recipe("voc", "deeplab") == "release" and default_recipe("folder", "deeplab") == "tuned"
    # the dataclass defaults are the release recipe (a bare TrainConfig trains as the authors)
    assert TrainConfig().recipe_report()["exact"] and AffinityTrainConfig().recipe_report()["exact"]
    rep = TrainConfig.from_recipe("tuned", epochs=60, lr=None).recipe_report()
    assert rep["overrides"] == {"epochs": 60} and rep["name"] == "tuned"
    with pytest.raises(ValueError, match="recipe"):
        TrainConfig.from_recipe("fast")


@pytest.mark.slow
def test_cli_recipe_default_and_sidecar(tmp_path):
    from seam.cli import app

    data = tmp_path / "synth"
    generate(data, n=12, seed=0, size=48)
    out = tmp_path / "run"
    res = CliRunner().invoke(app, ["train", "seam", "--data", str(data), "--backbone", "resnet38_small", "--crop", "48",
                                   "--batch-size", "4", "--epochs", "1", "--threads", "1", "--no-eval",
                                   "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "recipe release" in res.output  # the default recipe, printed at start
    side = json.loads((out / "seam_final.json").read_text())
    assert side["recipe"]["name"] == "release" and side["training"]["momentum"] == AUTHORS_MOMENTUM
    assert side["recipe"]["overrides"] == {"batch_size": 4, "epochs": 1, "crop": 48}
    out2 = tmp_path / "run2"
    res = CliRunner().invoke(app, ["train", "seam", "--data", str(data), "--recipe", "tuned", "--backbone",
                                   "resnet38_small", "--crop", "48", "--batch-size", "4", "--epochs", "1",
                                   "--threads", "1", "--no-eval", "--no-jitter", "--out", str(out2)])
    assert res.exit_code == 0, res.output
    side = json.loads((out2 / "seam_final.json").read_text())
    assert side["recipe"]["name"] == "tuned" and side["training"]["momentum"] == 0.9
    assert side["config"]["jitter"] is None and side["recipe"]["overrides"]["jitter"] is None
    res = CliRunner().invoke(app, ["train", "seam", "--help"])
    assert "release" in res.output and "tuned" in res.output


# --------------------------------------------------------------------------- DeepLab as the authors ran it

def _authors_keys(sd):
    """Our DeepLab state dict under the authors' deeplabv1 names (the inverse mapping, by hand)."""
    head = {"fc6.": "conv_fov.", "bn_fc6.": "bn_fov.", "fc7.": "conv_fov2.", "bn_fc7.": "bn_fov2.",
            "classifier.": "cls_conv."}
    out = {}
    for k, v in sd.items():
        for ours, theirs in head.items():
            if k.startswith(ours):
                out[theirs + k[len(ours):]] = v
                break
        else:
            out["backbone." + k] = v
    return out


def test_authors_deeplab_keys_load_strictly():
    small = create_model("seam", "resnet38_small").cfg
    src = DeepLabLargeFOV(num_classes=21, backbone=small)
    theirs = {"module." + k: v for k, v in _authors_keys(src.state_dict()).items()}
    assert is_authors_state_dict(theirs) and not is_authors_state_dict(src.state_dict())
    dst = DeepLabLargeFOV(num_classes=21, backbone=small)
    dst.load_state_dict(from_authors_state_dict(theirs), strict=True)
    for k, v in src.state_dict().items():
        assert torch.equal(dst.state_dict()[k], v), k
    assert from_authors_state_dict(src.state_dict()) is not None  # ours pass through unchanged
    assert isinstance(dst.dropout, torch.nn.Dropout) and dst.bn_fc6.momentum == 3e-4


@pytest.mark.slow
def test_deeplab_release_recipe_trains_as_the_authors(tmp_path):
    cfg = DeepLabTrainConfig.from_recipe("release")
    assert (cfg.batch_size, cfg.max_iterations, cfg.lr, cfg.momentum, cfg.weight_decay, cfg.crop) == \
        (10, 20000, 1e-3, 0.9, 5e-4, 448)
    assert (cfg.bn_mode, cfg.hsv, cfg.loss_align_corners, cfg.poly_plus_one) == ("authors", (10, 10, 10), True, True)
    img_dir, lab_dir = tiny_set(tmp_path)
    out = tmp_path / "run"
    cfg = DeepLabTrainConfig.from_recipe("release", images=str(img_dir), labels=str(lab_dir),
                                         backbone="resnet38_small", batch_size=2, max_iterations=3, crop=48,
                                         out=str(out), log_every=1)
    cfg.stop_after = 1
    train_deeplab(cfg, log=lambda m: None)
    mid = torch.load(out / "checkpoint.pth", weights_only=True)["model"]
    cfg.stop_after, cfg.resume = None, True
    side = train_deeplab(cfg, log=lambda m: None)
    assert side["training"]["iterations"] == 3 and side["training"]["completed"]  # counted in iterations
    assert side["recipe"]["name"] == "release"
    assert side["recipe"]["overrides"] == {"batch_size": 2, "max_iterations": 3, "crop": 48}
    rows = (out / "log.csv").read_text().splitlines()[1:]
    lrs = [float(r.split(",")[2]) for r in rows]
    assert lrs == pytest.approx([1e-3 * (1 - i / 4) ** 0.9 for i in range(3)], rel=1e-5)  # poly over 3 + 1
    final = torch.load(out / DEEPLAB_FINAL, weights_only=True)
    # every conv trains, conv1a and b2 included
    for k in ("conv1a.weight", "b2.conv_branch2a.weight", "b3.conv_branch2a.weight", "fc6.weight", "classifier.bias"):
        assert not torch.equal(final[k], mid[k]), k
    # no BN parameter is optimised (head BN stays at its 1 / 0 init) ...
    for k in ("bn_fc6.weight", "bn_fc7.bias", "b3.bn_branch2a.weight", "bn7.bias"):
        assert torch.equal(final[k], mid[k]), k
    assert torch.equal(final["bn_fc6.weight"], torch.ones(512)) and torch.equal(final["bn_fc6.bias"], torch.zeros(512))
    # ... but every BN runs on batch statistics: the running statistics move (momentum 3e-4)
    for k in ("b3.bn_branch2a.running_mean", "bn7.running_var", "bn_fc6.running_mean"):
        d = (final[k] - mid[k]).abs().max().item()
        assert d > 0, k
    d = (final["bn_fc6.running_mean"] - mid["bn_fc6.running_mean"]).abs().max().item()
    assert d < 0.01  # a small momentum, not torch's default 0.1


def test_deeplab_test_protocol_is_the_mean_of_logits():
    class Fake(torch.nn.Module):
        def __init__(self):
            super().__init__()
            g = torch.Generator().manual_seed(0)
            self.w = torch.randn(3, 3, 1, 1, generator=g)

        def forward(self, x):
            return F.conv2d(F.avg_pool2d(x, 8, ceil_mode=True), self.w) * 3

    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 255, size=(40, 56, 3), dtype=np.uint8)
    model = Fake()
    got = segment_probs(model, rgb, scales=(0.5, 1.0, 1.75), flip=True)
    from seam.common.image import Normalization, resize_rgb, scaled_size

    H, W = 40, 56
    zs = []
    for s in (0.5, 1.0, 1.75):
        h, w = scaled_size((H, W), s)
        x = torch.from_numpy(Normalization()(resize_rgb(rgb, (h, w))))[None]
        for flip in (False, True):
            z = model(x.flip(-1) if flip else x)
            z = F.interpolate(F.interpolate(z, (h, w), mode="bilinear", align_corners=True), (H, W),
                              mode="bilinear", align_corners=True)
            zs.append(z.flip(-1) if flip else z)
    ref = torch.cat(zs).mean(0).softmax(0).numpy()
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-6)
    mean_of_probs = torch.cat(zs).softmax(1).mean(0).numpy()
    assert not np.allclose(got, mean_of_probs, atol=1e-4)  # the order matters and is the authors'
    assert DEFAULT_SEG_SCALES == (0.5, 0.75, 1.0, 1.25, 1.5, 1.75) == PipelineConfig("d", "o").seg_scales
    assert SEG_CRF["iters"] == 1 and SEG_CRF["bi_sxy"] == 32
