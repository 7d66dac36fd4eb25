"""AffinityNet training samples: image crop + pair labels at stride 8.

Augmentation as the authors' `train_aff.py` / `VOC12AffDataset`: ColorJitter on the
image, random crop (zero padding, applied jointly to the image and its labels),
horizontal flip, normalise; the label crop is reduced to stride 8 and turned into
bg-positive / fg-positive / negative pair indicators (`seam.common.affinity_labels`).
No random rescaling (the release has none for AffinityNet).

Labels: when <id>.npz (the la / ha posteriors of `write_scores`) sits next to the
label PNG, the posteriors are cropped and flipped with the image and reduced as the
release does (average-pool by 8, argmax, combine; `stride_labels_from_scores`).
A PNG alone (a label set without scores) is reduced by `stride_labels`' voting.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from seam.training.data.augment import (
    AUTHORS_CROP,
    RELEASE_JITTER,
    LabelledImageDataset,
    color_jitter,
    crop_with_label,
    random_crop,
)

from seam.common.affinity_labels import (
    class_table,
    pair_labels,
    read_scores,
    stride_labels,
    stride_labels_from_scores,
)
from seam.common.cam import OUTPUT_STRIDE
from seam.common.image import Normalization
from seam.common.random_walk import DEFAULT_RADIUS


class AffinityDataError(ValueError):
    pass


@dataclass(frozen=True)
class AffinityAugmentConfig:
    crop: int = AUTHORS_CROP  # square crop side, a multiple of 8
    flip: bool = True
    jitter: tuple[float, float, float, float] | None = RELEASE_JITTER
    radius: int = DEFAULT_RADIUS
    normalization: Normalization = Normalization()

    def __post_init__(self) -> None:
        if self.crop % OUTPUT_STRIDE or self.crop // OUTPUT_STRIDE < self.radius * 2:
            raise ValueError(f"crop must be a multiple of {OUTPUT_STRIDE} and at least "
                             f"{OUTPUT_STRIDE * 2 * self.radius}, got {self.crop}")


def augment_pair(img: Image.Image, label: np.ndarray, cfg: AffinityAugmentConfig,
                 rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """-> (image (3, crop, crop) float32 normalised, label crop (crop, crop) int16 with PAD
    where the crop fell outside the image)."""
    if label.shape != (img.size[1], img.size[0]):
        raise AffinityDataError(f"label {label.shape} does not match image {img.size[1]}x{img.size[0]}")
    if cfg.jitter is not None:
        img = color_jitter(img, rng, *cfg.jitter)
    x, lab = crop_with_label(np.asarray(img, np.float32), label, cfg.crop, rng)  # outside: black pixels, label PAD
    if cfg.flip and rng.random() < 0.5:
        x, lab = x[:, ::-1], lab[:, ::-1]
    return cfg.normalization(x), lab.astype(np.int16)


def augment_scores(img: Image.Image, la: np.ndarray, ha: np.ndarray, classes: list[int],
                   cfg: AffinityAugmentConfig, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """`augment_pair` for la / ha posteriors (K+1, H, W): the same draws from `rng` (jitter,
    crop, flip), the posteriors cropped (0 outside the image) and flipped with the image,
    then reduced as the release -> (image (3, crop, crop), stride-8 labels (crop/8, crop/8)
    uint8 in stored format: 0, c+1, 255)."""
    if la.shape[1:] != (img.size[1], img.size[0]):
        raise AffinityDataError(f"scores {la.shape[1:]} do not match image {img.size[1]}x{img.size[0]}")
    if cfg.jitter is not None:
        img = color_jitter(img, rng, *cfg.jitter)
    k = la.shape[0]
    joint = np.concatenate([np.asarray(img, np.float32), la.transpose(1, 2, 0), ha.transpose(1, 2, 0)], axis=-1)
    joint = random_crop(joint, cfg.crop, rng)
    if cfg.flip and rng.random() < 0.5:
        joint = joint[:, ::-1]
    scores = joint[..., 3:].transpose(2, 0, 1)
    label8 = stride_labels_from_scores(scores[:k], scores[k:])
    return cfg.normalization(np.ascontiguousarray(joint[..., :3])), class_table(classes)[label8]


def scores_path(label_path: Path) -> Path:
    """<id>.npz next to <id>.png: the posteriors the label was made from, when kept."""
    return Path(label_path).with_suffix(".npz")


class AffinityDataset(LabelledImageDataset):
    """key (index, epoch) -> (image (3, crop, crop), pairs (3, P, N) float32, index);
    pairs = bg-positive, fg-positive, negative. RNG = default_rng([seed, epoch, index]).
    The label PNG's posteriors (<id>.npz) are used when present (module docstring)."""

    default_config = AffinityAugmentConfig
    error = AffinityDataError

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor, int]:
        img, label, rng, index = self.load(key)
        scores = scores_path(self.label_paths[index])
        if scores.is_file():
            la, ha, classes = read_scores(scores)
            x, label8 = augment_scores(img, la, ha, classes, self.cfg, rng)
        else:
            x, lab = augment_pair(img, label, self.cfg, rng)
            label8 = stride_labels(lab)
        pairs = pair_labels(label8, self.cfg.radius)
        return torch.from_numpy(x), torch.from_numpy(pairs), index
