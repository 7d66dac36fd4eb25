"""AffinityNet training samples: image crop + pair labels at stride 8.

Augmentation as the authors' `train_aff.py` / `VOC12AffDataset`: ColorJitter on the
image, random crop (zero padding, applied jointly to the image and its label map),
horizontal flip, normalise; the label crop is reduced to stride 8 and turned into
bg-positive / fg-positive / negative pair indicators (`seam.common.affinity_labels`).
No random rescaling (the release has none for AffinityNet).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from seam.common.affinity_labels import pair_labels, stride_labels
from seam.common.cam import OUTPUT_STRIDE
from seam.common.image import ImageDecodeError, Normalization, open_image
from seam.common.random_walk import DEFAULT_RADIUS
from training.data.augment import AUTHORS_CROP, color_jitter, random_crop
from training.evaluation.evaluate import read_label_png


class AffinityDataError(ValueError):
    pass


@dataclass(frozen=True)
class AffinityAugmentConfig:
    crop: int = AUTHORS_CROP  # square crop side, a multiple of 8
    flip: bool = True
    jitter: tuple[float, float, float, float] | None = (0.3, 0.3, 0.3, 0.1)
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
    joint = np.concatenate([np.asarray(img, np.float32), label[..., None].astype(np.float32) + 1], axis=-1)
    joint = random_crop(joint, cfg.crop, rng)  # zeros outside the image: black pixels, label PAD
    if cfg.flip and rng.random() < 0.5:
        joint = joint[:, ::-1]
    x = cfg.normalization(joint[..., :3])
    lab = joint[..., 3].astype(np.int16) - 1
    return x, lab


class AffinityDataset(torch.utils.data.Dataset):
    """key (index, epoch) -> (image (3, crop, crop), pairs (3, P, N) float32, index);
    pairs = bg-positive, fg-positive, negative. RNG = default_rng([seed, epoch, index])."""

    def __init__(self, image_paths: Sequence[Path], label_paths: Sequence[Path],
                 cfg: AffinityAugmentConfig = AffinityAugmentConfig(), seed: int = 0) -> None:
        if len(image_paths) != len(label_paths):
            raise ValueError("one label per image")
        self.image_paths, self.label_paths, self.cfg, self.seed = list(image_paths), list(label_paths), cfg, seed

    def __len__(self) -> int:
        return len(self.image_paths)

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor, int]:
        index, epoch = (key, 0) if isinstance(key, (int, np.integer)) else key
        try:
            img = open_image(self.image_paths[index])
        except ImageDecodeError as exc:
            raise AffinityDataError(f"{self.image_paths[index]}: {exc}") from exc
        label = read_label_png(self.label_paths[index])
        x, lab = augment_pair(img, label, self.cfg, np.random.default_rng([self.seed, epoch, index]))
        pairs = pair_labels(stride_labels(lab), self.cfg.radius)
        return torch.from_numpy(x), torch.from_numpy(pairs), index
