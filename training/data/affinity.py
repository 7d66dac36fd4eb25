"""AffinityNet training samples: image crop + pair labels at stride 8.

Augmentation as the authors' `train_aff.py` / `VOC12AffDataset`: ColorJitter on the
image, random crop (zero padding, applied jointly to the image and its label map),
horizontal flip, normalise; the label crop is reduced to stride 8 and turned into
bg-positive / fg-positive / negative pair indicators (`seam.common.affinity_labels`).
No random rescaling (the release has none for AffinityNet).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from seam.common.affinity_labels import pair_labels, stride_labels
from seam.common.cam import OUTPUT_STRIDE
from seam.common.image import Normalization
from seam.common.random_walk import DEFAULT_RADIUS
from training.data.augment import (
    AUTHORS_CROP,
    RELEASE_JITTER,
    LabelledImageDataset,
    color_jitter,
    crop_with_label,
)


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


class AffinityDataset(LabelledImageDataset):
    """key (index, epoch) -> (image (3, crop, crop), pairs (3, P, N) float32, index);
    pairs = bg-positive, fg-positive, negative. RNG = default_rng([seed, epoch, index])."""

    default_config = AffinityAugmentConfig
    error = AffinityDataError

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor, int]:
        img, label, rng, index = self.load(key)
        x, lab = augment_pair(img, label, self.cfg, rng)
        pairs = pair_labels(stride_labels(lab), self.cfg.radius)
        return torch.from_numpy(x), torch.from_numpy(pairs), index
