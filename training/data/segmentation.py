"""DeepLab training samples: image + pixel labels (pseudo labels or ground truth).

Augmentation: optional HSV shift (the authors' DeepLab runs: +-10 in OpenCV units),
random rescale by a factor in [0.5, 1.5] (image bicubic, label nearest), horizontal
flip, optional colour jitter, normalise, random crop with the image padded by 0 (after
normalisation) and the label by 255 (ignored by the loss).

The HSV shift uses Pillow's HSV (hue 0..255) with the hue delta scaled from OpenCV's
0..179 range: the authors' `RandomHSV` uses cv2.cvtColor, whose rounding differs by a
level here and there; OpenCV is not a dependency.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image
from seam.training.data.augment import (
    AUTHORS_CROP,
    LabelledImageDataset,
    color_jitter,
    crop_with_label,
)

from seam.common.classes import IGNORE_INDEX
from seam.common.image import Normalization


class SegmentationDataError(ValueError):
    pass


@dataclass(frozen=True)
class SegAugmentConfig:
    crop: int = AUTHORS_CROP
    scale_range: tuple[float, float] = (0.5, 1.5)
    flip: bool = True
    jitter: tuple[float, float, float, float] | None = None
    hsv: tuple[int, int, int] | None = None  # max |shift| of H (OpenCV 0..179 units), S, V (0..255)
    normalization: Normalization = Normalization()

    def __post_init__(self) -> None:
        lo, hi = self.scale_range
        if not 0 < lo <= hi:
            raise ValueError(f"scale range must satisfy 0 < min <= max, got {self.scale_range}")
        if self.crop < 8:
            raise ValueError(f"crop must be at least 8, got {self.crop}")


def hsv_shift(img: Image.Image, dh: int, ds: int, dv: int) -> Image.Image:
    """Shift hue by dh (OpenCV units, 180 per turn, wrapping), saturation and value by ds, dv
    (clipped to 0..255), as the authors' RandomHSV."""
    hsv = np.asarray(img.convert("HSV"), dtype=np.int32).copy()
    hsv[..., 0] = (hsv[..., 0] + int(round(dh * 256 / 180))) % 256
    hsv[..., 1] = np.clip(hsv[..., 1] + ds, 0, 255)
    hsv[..., 2] = np.clip(hsv[..., 2] + dv, 0, 255)
    return Image.fromarray(hsv.astype(np.uint8), "HSV").convert("RGB")


def seg_augment(img: Image.Image, label: np.ndarray, cfg: SegAugmentConfig,
                rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """-> (image (3, crop, crop) float32, label (crop, crop) int64 with 255 = ignore)."""
    W, H = img.size
    if label.shape != (H, W):
        raise SegmentationDataError(f"label {label.shape} does not match image {H}x{W}")
    if cfg.hsv is not None:  # first, as the authors' weak augmentation
        dh, ds, dv = (int(rng.integers(-r, r + 1)) for r in cfg.hsv)
        img = hsv_shift(img, dh, ds, dv)
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
    x, y = crop_with_label(x, label, cfg.crop, rng)  # outside: image 0, label -1 -> ignore
    y[y < 0] = IGNORE_INDEX
    return np.ascontiguousarray(x.transpose(2, 0, 1)), y


class SegmentationDataset(LabelledImageDataset):
    """key (index, epoch) -> (image (3, crop, crop), label (crop, crop) int64, index)."""

    default_config = SegAugmentConfig
    error = SegmentationDataError

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor, int]:
        img, label, rng, index = self.load(key)
        x, y = seg_augment(img, label, self.cfg, rng)
        return torch.from_numpy(x), torch.from_numpy(y), index
