"""AffinityNet training (the authors' `train_aff.py`): its config, data, loss and step.

The run is the template every stage fills in (`template.Trainer`: device + DDP set-up,
BN/conv1a/b2 freezing, resume, checkpoints, the epoch loop of `run.Run`), with the four
parameter groups + poly schedule of `schedule.py`. Single process or DDP under
torchrun, AMP on CUDA, `--resume` from RUN_DIR/checkpoint.pth, `--max-minutes` /
`stop_after` stops that leave a resumable checkpoint.

Run directory: checkpoint.pth, affinity_final.pth (bare state dict, the authors' key
names) + affinity_final.json (sidecar: kind, backbone, class names, radius, config,
training summary, loss history), log.csv.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from seam.training.data.affinity import AffinityAugmentConfig, AffinityDataset
from seam.training.data.augment import RELEASE_JITTER
from seam.training.data.datasets import DATASET_HELP, DatasetError, build_dataset, dataset_choices
from seam.training.data.label_png import files_fingerprint, labelled_items
from seam.training.models.affinity import pair_affinity
from seam.training.models.registry import create_model
from seam.training.trainers.config import StageConfig
from seam.training.trainers.distributed import Dist
from seam.training.trainers.recipes import RECIPE_HELP
from seam.training.trainers.schedule import AUTHORS_MOMENTUM
from seam.training.trainers.template import Log, OnProgress, Parts, Step, Trainer
from torch import nn

from seam.common.options import setting
from seam.common.random_walk import DEFAULT_RADIUS

EPS = 1e-5
AFFINITY_FINAL = "affinity_final.pth"


def affinity_loss(aff: torch.Tensor, pairs: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """bg/4 + fg/4 + neg/2, each a mean cross-entropy over its pair set (the whole batch).

    aff (B, P, N) in (0, 1]; pairs (B, 3, P, N) float indicators: bg-positive,
    fg-positive, negative. Positives cost -log(aff + 1e-5), negatives
    -log(1 + 1e-5 - aff); the means divide by (count + 1e-5) as the release.
    """
    bg, fg, neg = pairs.unbind(dim=1)
    aff = aff.float()
    pos_ce = -torch.log(aff + EPS)
    bg_loss = (bg * pos_ce).sum() / (bg.sum() + EPS)
    fg_loss = (fg * pos_ce).sum() / (fg.sum() + EPS)
    neg_loss = (neg * -torch.log(1.0 + EPS - aff)).sum() / (neg.sum() + EPS)
    total = bg_loss / 4 + fg_loss / 4 + neg_loss / 2
    return total, {"bg": bg_loss.detach(), "fg": fg_loss.detach(), "neg": neg_loss.detach()}


@dataclass
class AffinityTrainConfig(StageConfig):
    """An AffinityNet run. Defaults are the release recipe, SEAM's train_aff.py: batch 8,
    8 epochs, crop 448, flip + colour jitter, radius 5, lr 0.01, SGD momentum 5e-4 (the
    release's PolyOptimizer puts weight decay in SGD's momentum slot), weight decay 5e-4
    per group, poly 0.9, fp32. (psa's train_aff.py, another release, uses lr 0.1.)
    `from_recipe("tuned", ...)`: momentum 0.9, AMP on CUDA."""

    data: str = setting("data/VOC2012", path=True, required=True,
                        help="Data root: VOC (JPEGImages/), a synth set, or an image folder.")
    labels: str = setting("runs/aff_labels", path=True, required=True, help=(
        "AffinityNet label PNGs <id>.png (0 bg, c+1 class, 255 unknown)."))  # seam.common.affinity_labels
    dataset: str = setting("auto", choices=dataset_choices, help=DATASET_HELP)
    train_list: str | None = setting(None, path=True, help=(
        "Image list (default: the data set's training list, images with labels)."))
    image_labels: str | None = setting(None, path=True, help=(
        "The data set's image-level label file, if not its default."))
    radius: int = setting(DEFAULT_RADIUS, help="Pair radius on the stride-8 grid.")
    flip: bool = setting(True, recipe=True, flag=None, off="--no-flip", help="No horizontal flip.")
    # the release's effective momentum; tuned: 0.9
    momentum: float = setting(AUTHORS_MOMENTUM, recipe=True, help="SGD momentum (recipe: release 5e-4, tuned 0.9).")
    amp: bool | None = setting(False, recipe=True, help=(
        "Mixed precision (recipe: release off, tuned on with CUDA)."))  # the release ran fp32; None: on with CUDA
    recipe: str = setting("release", recipe=True, help=RECIPE_HELP)  # seam.training.trainers.recipes

    STAGE = "affinity"
    SCHEDULE_FIELDS = (*StageConfig.SCHEDULE_FIELDS, "radius", "flip")

    def validate(self) -> None:
        super().validate()
        self.validate_recipe()
        AffinityAugmentConfig(crop=self.crop, radius=self.radius)


def affinity_items(cfg: AffinityTrainConfig) -> tuple[list[str], list[Path], list[Path], list[str]]:
    """(ids, image paths, label paths, class names) of the training images that have labels."""
    label_dir = Path(cfg.labels)
    if not label_dir.is_dir():
        raise DatasetError(f"AffinityNet label directory not found: {label_dir}")
    ds = build_dataset(cfg.dataset, cfg.data, cfg.train_list, cfg.image_labels, check_images=False)
    ids, paths, labels = labelled_items(zip(ds.ids, ds.paths, strict=True), label_dir)
    if not ids:
        raise DatasetError(f"none of the {len(ds)} training images has a label in {label_dir}")
    if cfg.train_list and len(ids) < len(ds):
        missing = [i for i in ds.ids if not (label_dir / f"{i}.png").is_file()]
        raise DatasetError(f"{len(missing)} listed images have no label in {label_dir} (first: {missing[0]})")
    return ids, paths, labels, ds.class_names


def affinity_step(net: nn.Module, batch: Sequence[torch.Tensor], device: torch.device, amp: bool,
                  radius: int) -> dict[str, torch.Tensor]:
    """One batch (image, pair labels, index) through `net` to the affinity loss and its parts."""
    img, pairs, _ = batch
    img = img.to(device, non_blocking=True)
    pairs = pairs.to(device, non_blocking=True)
    with torch.autocast(device_type=device.type, dtype=torch.float16, enabled=amp):
        feat = net(img)
    aff = pair_affinity(feat.float(), radius)  # (B, P, N)
    loss, parts = affinity_loss(aff, pairs)
    return {"loss": loss, **parts}


class AffinityTrainer(Trainer[AffinityTrainConfig]):
    """AffinityNet on (image, AffinityNet label PNG) pairs: the template's defaults (the
    release's freezing, optimiser and schedule) with the pair-affinity loss."""

    kind = "affinity"
    final_name = AFFINITY_FINAL
    loss_terms = ("loss", "bg", "fg", "neg")

    def build(self, log: Log) -> Parts:
        cfg = self.cfg
        ids, paths, labels, class_names = affinity_items(cfg)
        aug = AffinityAugmentConfig(crop=cfg.crop, flip=cfg.flip,
                                    jitter=RELEASE_JITTER if cfg.jitter else None, radius=cfg.radius)
        return Parts(create_model("affinity", cfg.backbone), AffinityDataset(paths, labels, aug, cfg.seed),
                     files_fingerprint(ids, labels),
                     {"class_names": class_names, "radius": cfg.radius,
                      "dataset": {"root": str(cfg.data), "labels": str(cfg.labels), "num_images": len(ids)}})

    def make_step(self, model: nn.Module, d: Dist, amp: bool) -> Step:
        net = d.parallel(model)
        return lambda batch, _iteration: affinity_step(net, batch, d.device, amp, self.cfg.radius)


def train_affinity(cfg: AffinityTrainConfig, on_progress: OnProgress | None = None,
                   log: Log | None = None) -> dict[str, Any]:
    """Train AffinityNet on (image, AffinityNet label PNG) pairs. Returns the sidecar dict."""
    return AffinityTrainer(cfg).train(on_progress, log)


__all__ = ["AFFINITY_FINAL", "AffinityTrainConfig", "AffinityTrainer", "affinity_loss", "train_affinity"]
