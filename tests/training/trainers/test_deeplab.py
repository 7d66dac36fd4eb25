"""DeepLab retraining: crop / ignore handling, the loss, the network, training and inference."""
import json

import numpy as np
import pytest
import torch
from PIL import Image
from seam.training.data.segmentation import SegAugmentConfig, SegmentationDataset, seg_augment
from seam.training.inference.segment import segment_label, segment_probs
from seam.training.models.checkpoint import CheckpointError
from seam.training.models.deeplab import DeepLabLargeFOV
from seam.training.models.registry import create_model, model_from_checkpoint
from seam.training.trainers.deeplab import DEEPLAB_FINAL, DeepLabTrainConfig, segmentation_loss, train_deeplab

from seam.common.classes import IGNORE_INDEX
from seam.common.palette import label_to_pil
from tests.training.helpers import tiny_set

NORM_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
NORM_STD = np.array([0.229, 0.224, 0.225], np.float32)


def _coded_pair(h=20, w=30, seed=0):
    """An image whose red channel encodes its label (40 * label), so alignment is checkable."""
    rng = np.random.default_rng(seed)
    label = rng.integers(0, 4, (h, w)).astype(np.uint8)
    label[0, 0] = IGNORE_INDEX
    rgb = np.zeros((h, w, 3), np.uint8)
    rgb[..., 0] = np.where(label == IGNORE_INDEX, 250, label * 40)
    return Image.fromarray(rgb), label


@pytest.mark.parametrize("seed", range(4))
def test_crop_pads_image_with_zero_and_label_with_ignore(seed):
    img, label = _coded_pair(seed=seed)
    cfg = SegAugmentConfig(crop=48, scale_range=(1.0, 1.0))
    x, y = seg_augment(img, label, cfg, np.random.default_rng(seed))
    assert x.shape == (3, 48, 48) and y.shape == (48, 48) and y.dtype == np.int64
    pad = np.all(x == 0, axis=0)
    assert pad.sum() == 48 * 48 - 20 * 30  # the image fits: everything else is padding
    assert (y[pad] == IGNORE_INDEX).all()
    inside = ~pad
    assert (y[inside] != IGNORE_INDEX).sum() == 20 * 30 - 1  # the one ignore pixel of the label survives
    red = np.rint((x[0] * NORM_STD[0] + NORM_MEAN[0]) * 255)
    valid = inside & (y != IGNORE_INDEX)
    assert np.array_equal(red[valid], y[valid] * 40)  # image and label stay aligned (incl. flips)


def test_crop_of_a_larger_image_has_no_padding_and_scale_resizes():
    img, label = _coded_pair(40, 60)
    cfg = SegAugmentConfig(crop=16, scale_range=(1.0, 1.0))
    x, y = seg_augment(img, label, cfg, np.random.default_rng(1))
    assert not np.all(x == 0, axis=0).any()
    cfg2 = SegAugmentConfig(crop=256, scale_range=(2.0, 2.0), flip=False)
    x2, y2 = seg_augment(img, label, cfg2, np.random.default_rng(1))
    assert (y2 != IGNORE_INDEX).sum() == 80 * 120 - 4  # nearest-upscaled label, ignore pixel now 2x2


def test_dataset_reads_palette_pngs(tmp_path):
    img, label = _coded_pair()
    img.save(tmp_path / "a.png")
    label_to_pil(label).save(tmp_path / "a_label.png")
    ds = SegmentationDataset([tmp_path / "a.png"], [tmp_path / "a_label.png"], SegAugmentConfig(crop=32), seed=3)
    x, y, idx = ds[(0, 2)]
    x2, y2, _ = ds[(0, 2)]
    assert torch.equal(x, x2) and torch.equal(y, y2)  # (seed, epoch, index) decides the augmentation
    assert x.shape == (3, 32, 32) and y.shape == (32, 32) and idx == 0


def test_loss_ignores_255():
    torch.manual_seed(0)
    logits = torch.randn(2, 4, 4, 4, requires_grad=True)
    target = torch.full((2, 32, 32), IGNORE_INDEX, dtype=torch.long)
    target[0, :8, :8] = 2
    target[1, 16:, 16:] = 1
    loss = segmentation_loss(logits, target)
    up = torch.nn.functional.interpolate(logits, (32, 32), mode="bilinear", align_corners=False)
    mask = target != IGNORE_INDEX
    ref = torch.nn.functional.cross_entropy(up.permute(0, 2, 3, 1)[mask], target[mask])
    assert loss.item() == pytest.approx(ref.item(), rel=1e-6)
    all_ignored = segmentation_loss(logits, torch.full((2, 32, 32), IGNORE_INDEX, dtype=torch.long))
    assert all_ignored.item() == 0.0
    all_ignored.backward()
    assert torch.isfinite(logits.grad).all()


def test_network_shapes_and_keys():
    net = DeepLabLargeFOV(num_classes=6, backbone=create_model("seam", "resnet38_small").cfg).eval()
    with torch.no_grad():
        out = net(torch.randn(1, 3, 75, 101))
    assert out.shape == (1, 6, 10, 13)
    sd = net.state_dict()
    assert sd["fc6.weight"].shape == (512, 512, 3, 3) and "fc6.bias" not in sd
    assert net.fc6.dilation == (12, 12)
    assert sd["classifier.bias"].shape == (6,)
    big = DeepLabLargeFOV(num_classes=21)
    assert big.fc6.in_channels == 4096


@pytest.mark.slow  # seconds of CPU each: out of the fast loop (under a minute), CI runs it
def test_train_resume_and_segment(tmp_path):
    img_dir, lab_dir = tiny_set(tmp_path)
    cfg = DeepLabTrainConfig(images=str(img_dir), labels=str(lab_dir), backbone="resnet38_small", batch_size=2,
                             epochs=2, crop=48, out=str(tmp_path / "run"), stop_after=1, log_every=1)
    side = train_deeplab(cfg, log=lambda m: None)
    assert side["training"]["stopped"] == "stop_after" and side["training"]["iterations"] == 1
    assert side["training"]["initialisation"]["bn_calibration_images"] > 0  # random init: BN calibrated
    mid = torch.load(tmp_path / "run" / "checkpoint.pth", weights_only=True)["model"]
    cfg.stop_after, cfg.resume = None, True
    side = train_deeplab(cfg, log=lambda m: None)
    assert side["training"]["completed"] and side["training"]["iterations"] == 4
    assert side["class_names"] == ["background", "a", "b"]
    final = tmp_path / "run" / DEEPLAB_FINAL
    assert json.loads(final.with_suffix(".json").read_text())["kind"] == "deeplab"
    model, meta = model_from_checkpoint(final, "deeplab")
    assert meta["num_classes"] == 3
    # the head's BN layers train, the backbone's stay frozen
    sd = torch.load(final, weights_only=True)
    for k in ("bn_fc6.running_mean", "bn_fc7.weight", "fc6.weight", "b3.conv_branch2a.weight"):
        assert not torch.equal(sd[k], mid[k]), k
    for k in ("b3.bn_branch2a.running_mean", "bn7.weight", "conv1a.weight", "b2.conv_branch1.weight"):
        assert torch.equal(sd[k], mid[k]), k
    rgb = np.asarray(Image.open(img_dir / "im0.png").convert("RGB"))
    p = segment_probs(model, rgb, scales=(0.75, 1.0), flip=True)
    assert p.shape == (3, 64, 64) and np.allclose(p.sum(0), 1, atol=1e-5)
    lab = segment_label(model, rgb, scales=(1.0,), flip=False)
    assert lab.shape == (64, 64) and lab.dtype == np.uint8 and lab.max() < 3
    cfg.epochs = 3
    with pytest.raises(CheckpointError, match="epochs"):
        train_deeplab(cfg, log=lambda m: None)
