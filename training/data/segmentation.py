"""DeepLab training samples: image + pixel labels (pseudo labels or ground truth).

Augmentation: random rescale by a factor in [0.5, 1.5] (image bicubic, label
nearest), horizontal flip, optional colour jitter, normalise, random crop with the
image padded by 0 (after normalisation) and the label by 255 (ignored by the loss).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from seam.common.classes import IGNORE_INDEX
from seam.common.image import ImageDecodeError, Normalization, open_image
from training.data.augment import AUTHORS_CROP, color_jitter, random_crop
from training.evaluation.evaluate import read_label_png


class SegmentationDataError(ValueError):
    pass


@dataclass(frozen=True)
class SegAugmentConfig:
    crop: int = AUTHORS_CROP
    scale_range: tuple[float, float] = (0.5, 1.5)
    flip: bool = True
    jitter: tuple[float, float, float, float] | None = None
    normalization: Normalization = Normalization()

    def __post_init__(self) -> None:
        lo, hi = self.scale_range
        if not 0 < lo <= hi:
            raise ValueError(f"scale range must satisfy 0 < min <= max, got {self.scale_range}")
        if self.crop < 8:
            raise ValueError(f"crop must be at least 8, got {self.crop}")


def seg_augment(img: Image.Image, label: np.ndarray, cfg: SegAugmentConfig,
                rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """-> (image (3, crop, crop) float32, label (crop, crop) int64 with 255 = ignore)."""
    W, H = img.size
    if label.shape != (H, W):
        raise SegmentationDataError(f"label {label.shape} does not match image {H}x{W}")
    s = float(rng.uniform(*cfg.scale_range))
    size = (max(1, round(W * s)), max(1, round(H * s)))
    if size != (W, H):
        img = img.resize(size, resample=Image.BICUBIC)
        label = np.asarray(Image.fromarray(label).resize(size, resample=Image.NEAREST))
    if cfg.flip and rng.random() < 0.5:
        img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        label = label[:, ::-1]
    if cfg.jitter is not None:
        img = color_jitter(img, rng, *cfg.jitter)
    x = cfg.normalization(np.asarray(img, dtype=np.uint8)).transpose(1, 2, 0)  # (h, w, 3)
    joint = np.concatenate([x, label[..., None].astype(np.float32) + 1], axis=-1)
    joint = random_crop(joint, cfg.crop, rng)  # zeros outside: image 0, label 0 - 1 -> ignore
    y = joint[..., 3].astype(np.int64) - 1
    y[y < 0] = IGNORE_INDEX
    return np.ascontiguousarray(joint[..., :3].transpose(2, 0, 1)), y


class SegmentationDataset(torch.utils.data.Dataset):
    """key (index, epoch) -> (image (3, crop, crop), label (crop, crop) int64, index)."""

    def __init__(self, image_paths: Sequence[Path], label_paths: Sequence[Path],
                 cfg: SegAugmentConfig = SegAugmentConfig(), seed: int = 0) -> None:
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
            raise SegmentationDataError(f"{self.image_paths[index]}: {exc}") from exc
        label = read_label_png(self.label_paths[index])
        x, y = seg_augment(img, label, self.cfg, np.random.default_rng([self.seed, epoch, index]))
        return torch.from_numpy(x), torch.from_numpy(y), index
