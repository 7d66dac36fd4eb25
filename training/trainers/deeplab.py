"""DeepLab-LargeFOV retraining on pseudo labels (the last stage of the SEAM pipeline).

The training template every stage fills in (`seam.training.trainers.template.Trainer`). Two recipes:

release - as the authors ran it (YudeWang/semantic-segmentation-codebase,
  experiment/seamv1-pseudovoc config.py + train.py, lib/net/deeplabv1.py,
  lib/net/backbone/resnet38d.py, lib/datasets/transform.py):
  - SGD momentum 0.9 (passed by keyword: no slip here), weight decay 5e-4, lr 1e-3;
    groups: backbone conv weights x1, head convs (conv_fov, conv_fov2, cls_conv) x10,
    cls_conv bias x20 without decay. Only convs are in the optimiser: no BN weight or bias
    is ever updated.
  - lr = 1e-3 * (1 - itr / (20000 + 1)) ** 0.9, 20000 iterations at batch 10 (2 GPUs x 5,
    plain BN under DataParallel: statistics per GPU, i.e. over 5 images, running statistics
    kept from the first GPU's). `bn_group` 5 gives the same statistics on one device: every
    training-mode BN normalises each group of 5 consecutive images of the device's batch by
    that group's statistics, and only the first group updates the running statistics. Under
    DDP the group applies to each rank's share (torchrun with 2 processes x 5 images is the
    authors' layout exactly; DDP broadcasts rank 0's running statistics).
  - BN: their train.py never calls net.train() / net.eval(), so the backbone's freezing
    `train()` override never runs: every BN (backbone and head) normalises with batch
    statistics and updates its running statistics with momentum 3e-4; conv1a and b2*
    are trained (`MODEL_FREEZEBN: False`; the head's BN affine stays at 1 / 0).
  - augmentation: HSV shift (+-10 on OpenCV's H 0..179, S, V), flip 0.5, rescale 0.5-1.5
    (bicubic image, nearest label), normalise, random crop 448 (image 0, label 255).
  - loss: cross-entropy (255 ignored) on logits upsampled to the crop
    (bilinear, align_corners=True, inside their network).
  Silent in the config: the seed of the crop/scale draws (they seed python/numpy/torch with 1),
  whether BN batch statistics were meant (MODEL_FREEZEBN False says so; nothing says
  the backbone's train() freeze was skipped on purpose).
tuned (ours, the dataclass defaults): batch 8, 20 epochs, frozen backbone BN / conv1a / b2,
  the head's BN trained (10x lr, no decay), ColorJitter off, loss upsampling
  align_corners=False - the stage-loop conventions of SEAM and AffinityNet, kept for
  small / random-init runs where batch statistics of tiny batches are noisy.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from seam.training.data.augment import RELEASE_JITTER
from seam.training.data.label_png import files_fingerprint, labelled_items
from seam.training.data.segmentation import SegAugmentConfig, SegmentationDataset
from seam.training.models.deeplab import BN_MOMENTUM
from seam.training.models.registry import create_model
from seam.training.trainers.batchnorm import set_train_mode
from seam.training.trainers.config import StageConfig
from seam.training.trainers.distributed import Dist
from seam.training.trainers.template import Log, OnProgress, Parts, Step, Trainer
from torch import nn

from seam.common.classes import IGNORE_INDEX, VOC_CLASSES
from seam.common.files import list_images
from seam.common.options import setting

DEEPLAB_FINAL = "deeplab_final.pth"


class DeepLabDataError(ValueError):
    pass


@dataclass
class DeepLabTrainConfig(StageConfig):
    """A DeepLab run on pseudo labels. Dataclass defaults: the `tuned` recipe (batch 8,
    20 epochs, lr 1e-3 (10x on the head), momentum 0.9, crop 448, scale 0.5-1.5, flip,
    frozen backbone BN). `DeepLabTrainConfig.from_recipe("release", ...)`: the authors'
    seamv1-pseudovoc run (module docstring)."""

    images: str = setting("data/VOC2012/JPEGImages", path=True, required=True, help=(
        "Image directory or list file (ids or VOC-style paths)."))
    labels: str = setting("runs/rw", path=True, required=True, help=(
        "Pseudo-label PNGs <id>.png (VOC palette, 255 ignored)."))
    image_root: str | None = setting(None, path=True, help="Where list-file entries live.")
    classes: str | None = setting(None, help=(
        "Class names (comma list or classes.txt); default LABELS/classes.txt, then the data root's, then VOC."))
    batch_size: int = setting(8, recipe=True, help="Global batch size (recipe: release 10, tuned 8).")
    epochs: int = setting(20, recipe=True, help=(
        "Epochs (recipe: tuned 20; release counts 20000 iterations, which given epochs replace)."))
    lr: float = setting(1e-3, recipe=True, help="Base learning rate, head 10x (recipe: 1e-3).")
    crop: int = setting(448, recipe=True, help=(
        "Square training crop, image padded with 0, labels with 255 (recipe: 448)."))
    jitter: bool = setting(False, recipe=True, help="Colour jitter.")
    scale_min: float = 0.5  # --scale-range MIN,MAX on the command line
    scale_max: float = 1.5
    out: str = setting("runs/deeplab", path=True, help="Run directory.")
    recipe: str = setting("tuned", recipe=True, help=(
        "release: the authors' DeepLab run (semantic-segmentation-codebase seamv1-pseudovoc: batch 10, 20000 "
        "iterations, every BN on batch statistics of 5 images, HSV jitter, all convs trained). tuned: batch 8, "
        "20 epochs, frozen backbone BN, head BN trained. Default: release for VOC images, tuned otherwise."))
    bn_mode: str = "frozen"  # frozen (backbone BN frozen, head BN trained) | authors (batch statistics, no BN updated)
    bn_group: int | None = setting(None, recipe=True, help=(
        "BN batch statistics per this many images of each device's batch, running statistics from the first "
        "group: the release's 2 GPUs x 5 on one device (recipe: release 5, tuned off)."))
    max_iterations: int | None = setting(None, recipe=True, flag="--iterations", help=(
        "Stop after this many iterations; wins over --epochs (recipe: release 20000)."))
    hsv: tuple[int, int, int] | None = None  # HSV shift ranges (OpenCV units), the release's (10, 10, 10)
    loss_align_corners: bool = False  # the release upsamples logits with align_corners=True
    poly_plus_one: bool = False  # the release's poly divides by max_iter + 1

    STAGE = "deeplab"
    SCHEDULE_FIELDS = (*StageConfig.SCHEDULE_FIELDS, "scale_min", "scale_max", "bn_mode", "bn_group", "max_iterations",
                       "hsv")

    @classmethod
    def from_recipe(cls, recipe: str, **settings: Any) -> DeepLabTrainConfig:
        """As RecipeConfig.from_recipe; explicit `epochs` without `max_iterations` also drop the
        recipe's iteration count (the release's 20000), so that the epochs given are the run."""
        cfg = super().from_recipe(recipe, **settings)
        if settings.get("epochs") is not None and settings.get("max_iterations") is None:
            cfg.max_iterations = None
        return cfg

    def __post_init__(self) -> None:
        if self.hsv is not None:
            self.hsv = tuple(int(v) for v in self.hsv)  # type: ignore[assignment]

    def validate(self) -> None:
        super().validate()
        if self.bn_mode not in ("frozen", "authors"):
            raise ValueError(f"bn_mode is frozen or authors, got {self.bn_mode!r}")
        if self.bn_group is not None and self.bn_group < 1:
            raise ValueError(f"bn_group must be >= 1, got {self.bn_group}")
        if self.max_iterations is not None and self.max_iterations < 1:
            raise ValueError("max_iterations must be >= 1")
        SegAugmentConfig(crop=self.crop, scale_range=(self.scale_min, self.scale_max))


def resolve_class_names(classes: str | None, search: Sequence[Path]) -> list[str]:
    """Class names, background first: `classes` (comma list or classes.txt), else the first
    classes.txt in `search`, else VOC."""
    from seam.training.data.datasets import read_class_names

    if classes:
        if Path(classes).is_file():
            return read_class_names(classes)
        names = [c.strip() for c in classes.split(",") if c.strip()]
        return names if names and names[0] == "background" else ["background", *names]
    for folder in search:
        if (folder / "classes.txt").is_file():
            return read_class_names(folder / "classes.txt")
    return list(VOC_CLASSES)


def deeplab_items(cfg: DeepLabTrainConfig) -> tuple[list[str], list[Path], list[Path], list[str]]:
    label_dir = Path(cfg.labels)
    if not label_dir.is_dir():
        raise DeepLabDataError(f"label directory not found: {label_dir}")
    try:
        items = list_images(cfg.images, cfg.image_root)
    except FileNotFoundError as exc:
        raise DeepLabDataError(str(exc)) from exc
    ids, paths, labels = labelled_items(items, label_dir)
    if not ids:
        raise DeepLabDataError(f"none of the {len(items)} images has a label PNG in {label_dir}")
    images = Path(cfg.images)
    search = [label_dir, images if images.is_dir() else images.parent,
              (images if images.is_dir() else images.parent).parent]
    if not images.is_dir():
        search.append(images.parent.parent.parent)  # VOC layout: ImageSets/Segmentation/x.txt
    return ids, paths, labels, resolve_class_names(cfg.classes, search)


def segmentation_loss(logits: torch.Tensor, target: torch.Tensor, align_corners: bool = False) -> torch.Tensor:
    """logits (B, C, h, w) at stride 8, target (B, H, W) int64 with 255 ignored ->
    mean cross-entropy over the valid pixels (0 when there are none). The release
    upsamples with align_corners=True."""
    up = F.interpolate(logits.float(), target.shape[-2:], mode="bilinear", align_corners=align_corners)
    if not (target != IGNORE_INDEX).any():
        return up.sum() * 0.0
    return F.cross_entropy(up, target, ignore_index=IGNORE_INDEX)


def deeplab_step(net: nn.Module, batch: Sequence[torch.Tensor], device: torch.device, amp: bool,
                 align_corners: bool = False) -> dict[str, torch.Tensor]:
    img, target, _ = batch
    img, target = img.to(device, non_blocking=True), target.to(device, non_blocking=True)
    with torch.autocast(device_type=device.type, dtype=torch.float16, enabled=amp):
        logits = net(img)
    return {"loss": segmentation_loss(logits, target, align_corners)}


class GroupBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d whose training-mode statistics are taken per `group` consecutive images of
    the batch, as plain BN on len(batch) / group devices under DataParallel; the running
    statistics follow the first group only (DataParallel keeps the first device's). Same
    parameters and buffers as BatchNorm2d, so checkpoints do not change. Eval mode is plain BN."""

    group: int

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or x.shape[0] <= self.group:
            return super().forward(x)
        head, *rest = x.split(self.group)
        out = [super().forward(head)]  # updates the running statistics
        out += [F.batch_norm(c, None, None, self.weight, self.bias, True, 0.0, self.eps) for c in rest]
        return torch.cat(out)


def group_batchnorm(model: nn.Module, group: int | None) -> nn.Module:
    """Every BatchNorm2d of `model` becomes a GroupBatchNorm2d over `group` images (in place;
    None leaves the model as it is). Returns the model."""
    if group is None:
        return model
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.__class__ = GroupBatchNorm2d
            m.group = group
    return model


def authors_train_mode(model: nn.Module) -> None:
    """The release's state during training: nn.Module.train() for everything (dropout on,
    every BN on batch statistics, running statistics updated with momentum 3e-4), no BN
    parameter trainable, no conv frozen."""
    model.train()
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.momentum = BN_MOMENTUM
            for p in m.parameters():
                p.requires_grad_(False)
        elif isinstance(m, nn.Conv2d):
            for p in m.parameters():
                p.requires_grad_(True)


def deeplab_train_mode(model: nn.Module) -> None:
    """Backbone BN frozen (as every stage of the release); the new head's BN trains."""
    set_train_mode(model)  # also sets requires_grad=False on every BN
    for m in (model.bn_fc6, model.bn_fc7):
        m.train()
        for p in m.parameters():
            p.requires_grad_(True)


class DeepLabTrainer(Trainer[DeepLabTrainConfig]):
    """DeepLab-LargeFOV on (image, pseudo label PNG) pairs. `bn_mode` frozen: the template's
    freezing with the head's BN trained (10x lr, no decay); authors: every conv trained, BN
    on batch statistics and never updated (module docstring)."""

    kind = "deeplab"
    final_name = DEEPLAB_FINAL
    loss_terms = ("loss",)

    @property
    def authors_bn(self) -> bool:
        return self.cfg.bn_mode == "authors"

    def build(self, log: Log) -> Parts:
        cfg = self.cfg
        ids, paths, labels, class_names = deeplab_items(cfg)
        aug = SegAugmentConfig(crop=cfg.crop, scale_range=(cfg.scale_min, cfg.scale_max),
                               jitter=RELEASE_JITTER if cfg.jitter else None, hsv=cfg.hsv)
        dataset = SegmentationDataset(paths, labels, aug, cfg.seed)
        model = group_batchnorm(create_model("deeplab", cfg.backbone, len(class_names)), cfg.bn_group)
        return Parts(model, dataset, files_fingerprint(ids, labels),
                     {"class_names": class_names, "num_classes": len(class_names),
                      "dataset": {"images": str(cfg.images), "labels": str(cfg.labels), "num_images": len(ids)}})

    def freeze(self, model: nn.Module) -> list[str]:
        """The authors' frozen BN / conv1a / b2; with bn_mode authors every conv trains
        (conv1a, b2* too, as their DeepLab run), BN parameters stay out."""
        frozen = super().freeze(model)
        if not self.authors_bn:
            return frozen
        for m in model.modules():
            if isinstance(m, nn.Conv2d):
                for p in m.parameters():
                    p.requires_grad_(True)
        return [n for n, p in model.named_parameters() if not p.requires_grad]

    def extra_params(self, model: nn.Module) -> list[nn.Parameter]:
        return [] if self.authors_bn else [p for m in (model.bn_fc6, model.bn_fc7) for p in m.parameters()]

    @property
    def poly_extra(self) -> int:
        return 1 if self.cfg.poly_plus_one else 0

    def train_mode(self, model: nn.Module) -> None:
        (authors_train_mode if self.authors_bn else deeplab_train_mode)(model)

    def make_step(self, model: nn.Module, d: Dist, amp: bool) -> Step:
        net = d.parallel(model)
        return lambda batch, _iteration: deeplab_step(net, batch, d.device, amp, self.cfg.loss_align_corners)


def train_deeplab(cfg: DeepLabTrainConfig, on_progress: OnProgress | None = None,
                  log: Log | None = None) -> dict[str, Any]:
    """Train DeepLab-LargeFOV on (image, pseudo label PNG) pairs. Returns the sidecar dict."""
    return DeepLabTrainer(cfg).train(on_progress, log)


__all__ = ["DEEPLAB_FINAL", "DeepLabTrainConfig", "DeepLabTrainer", "GroupBatchNorm2d", "group_batchnorm",
           "segmentation_loss", "train_deeplab"]
