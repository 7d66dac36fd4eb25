"""DeepLab-LargeFOV retraining on pseudo labels (the last stage of the SEAM pipeline).

Same loop as AffinityNet (`training.engine.affinity.run_stage`): four parameter
groups with poly decay, frozen backbone BN / conv1a / b2, the head's own BN layers
trained (10x lr, no decay). Loss: cross-entropy over the logits upsampled
(bilinear) to the crop size, 255 ignored (crop padding, unknown pseudo labels).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from seam.common.classes import IGNORE_INDEX, VOC_CLASSES
from seam.common.files import list_images
from training.data.segmentation import SegAugmentConfig, SegmentationDataset
from training.engine.affinity import Stage, StageConfig, files_fingerprint, labelled_items, train_stage
from training.engine.loop import Progress
from training.engine.trainer import set_train_mode
from training.models.registry import create_model

DEEPLAB_FINAL = "deeplab_final.pth"


class DeepLabDataError(ValueError):
    pass


@dataclass
class DeepLabTrainConfig(StageConfig):
    """A DeepLab run on pseudo labels. Our defaults (the SEAM paper gives none): batch 8,
    20 epochs, lr 1e-3 (10x on the head), momentum 0.9, crop 448, scale 0.5-1.5, flip."""

    images: str = "data/VOC2012/JPEGImages"  # image directory or list file
    labels: str = "runs/rw"  # <id>.png pseudo labels (VOC palette, 255 = ignore)
    image_root: str | None = None  # where list-file entries live
    classes: str | None = None  # comma list or classes.txt; None: LABELS/classes.txt, then the images' root
    epochs: int = 20
    lr: float = 1e-3
    jitter: bool = False
    scale_min: float = 0.5
    scale_max: float = 1.5
    out: str = "runs/deeplab"

    SCHEDULE_FIELDS = (*StageConfig.SCHEDULE_FIELDS, "scale_min", "scale_max")

    def validate(self) -> None:
        super().validate()
        SegAugmentConfig(crop=self.crop, scale_range=(self.scale_min, self.scale_max))


def resolve_class_names(classes: str | None, search: Sequence[Path]) -> list[str]:
    """Class names, background first: `classes` (comma list or classes.txt), else the first
    classes.txt in `search`, else VOC."""
    from training.data.datasets import read_class_names

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
    search = [label_dir, images if images.is_dir() else images.parent, (images if images.is_dir() else images.parent).parent]
    if not images.is_dir():
        search.append(images.parent.parent.parent)  # VOC layout: ImageSets/Segmentation/x.txt
    return ids, paths, labels, resolve_class_names(cfg.classes, search)


def segmentation_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """logits (B, C, h, w) at stride 8, target (B, H, W) int64 with 255 ignored ->
    mean cross-entropy over the valid pixels (0 when there are none)."""
    up = F.interpolate(logits.float(), target.shape[-2:], mode="bilinear", align_corners=False)
    if not (target != IGNORE_INDEX).any():
        return up.sum() * 0.0
    return F.cross_entropy(up, target, ignore_index=IGNORE_INDEX)


def deeplab_step(net: nn.Module, batch: Sequence[torch.Tensor], device: torch.device, amp: bool) -> dict[str, torch.Tensor]:
    img, target, _ = batch
    img, target = img.to(device, non_blocking=True), target.to(device, non_blocking=True)
    with torch.autocast(device_type=device.type, dtype=torch.float16, enabled=amp):
        logits = net(img)
    return {"loss": segmentation_loss(logits, target)}


def deeplab_train_mode(model: nn.Module) -> None:
    """Backbone BN frozen (as every stage of the release); the new head's BN trains."""
    set_train_mode(model)  # also sets requires_grad=False on every BN
    for m in (model.bn_fc6, model.bn_fc7):
        m.train()
        for p in m.parameters():
            p.requires_grad_(True)


def train_deeplab(cfg: DeepLabTrainConfig, on_progress: Callable[[Progress], None] | None = None,
                  log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Train DeepLab-LargeFOV on (image, pseudo label PNG) pairs. Returns the sidecar dict."""

    def build() -> tuple[Stage, nn.Module, SegmentationDataset]:
        ids, paths, labels, class_names = deeplab_items(cfg)
        aug = SegAugmentConfig(crop=cfg.crop, scale_range=(cfg.scale_min, cfg.scale_max),
                               jitter=(0.3, 0.3, 0.3, 0.1) if cfg.jitter else None)
        dataset = SegmentationDataset(paths, labels, aug, cfg.seed)
        model = create_model("deeplab", cfg.backbone, len(class_names))
        head_bn = [p for m in (model.bn_fc6, model.bn_fc7) for p in m.parameters()]
        stage = Stage(
            kind="deeplab", final_name=DEEPLAB_FINAL, loss_terms=("loss",), step=deeplab_step,
            fingerprint=files_fingerprint(ids, labels), extra_params=head_bn, train_mode=deeplab_train_mode,
            sidecar={"class_names": class_names, "num_classes": len(class_names),
                     "dataset": {"images": str(cfg.images), "labels": str(cfg.labels), "num_images": len(ids)}},
        )
        return stage, model, dataset

    return train_stage(cfg, build, on_progress, log)


__all__ = ["DEEPLAB_FINAL", "DeepLabTrainConfig", "segmentation_loss", "train_deeplab"]
