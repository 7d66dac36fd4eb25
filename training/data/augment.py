"""Training augmentation of the authors' SEAM/AffinityNet loaders, in numpy + Pillow.

Order (train_SEAM.py): random long-side resize (bicubic) -> horizontal flip ->
ColorJitter(0.3, 0.3, 0.3, 0.1) -> normalise -> random crop with 0 padding ->
HWC->CHW. torchvision is not a dependency: the jitter re-implements its PIL
path (ImageEnhance for brightness/contrast/saturation, HSV hue shift with uint8
wrap-around, the four ops in random order).

Every random choice comes from the `np.random.Generator` passed in, which the
dataset derives from (seed, epoch, index): augmentation is then identical for any
number of loader workers and after `--resume`.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageEnhance
from seam.training.data.datasets import DatasetError, ImageLabelSet
from seam.training.data.label_png import read_label_png

from seam.common.image import ImageDecodeError, Normalization, open_image

AUTHORS_CROP = 448
AUTHORS_RESIZE_LONG = (448, 768)
# the release's ColorJitter strengths (brightness, contrast, saturation, hue), every stage that jitters
RELEASE_JITTER: tuple[float, float, float, float] = (0.3, 0.3, 0.3, 0.1)


@dataclass(frozen=True)
class AugmentConfig:
    crop: int = AUTHORS_CROP  # square crop side
    resize_long: tuple[int, int] | None = None  # None: the authors' [448, 768] scaled by crop/448
    flip: bool = True
    jitter: tuple[float, float, float, float] | None = RELEASE_JITTER  # brightness, contrast, saturation, hue
    normalization: Normalization = Normalization()

    @property
    def resize_range(self) -> tuple[int, int]:
        lo, hi = self.resize_long if self.resize_long is not None else release_resize_range(self.crop)
        if not 0 < lo <= hi:
            raise ValueError(f"resize range must satisfy 0 < min <= max, got [{lo}, {hi}]")
        return lo, hi


def release_resize_range(crop: int) -> tuple[int, int]:
    """The authors' random long side [448, 768], scaled by crop / 448."""
    f = crop / AUTHORS_CROP
    return round(AUTHORS_RESIZE_LONG[0] * f), round(AUTHORS_RESIZE_LONG[1] * f)


def random_resize_long(img: Image.Image, lo: int, hi: int, rng: np.random.Generator) -> Image.Image:
    """The authors' RandomResizeLong: long side to randint[lo, hi], aspect kept, bicubic."""
    target = int(rng.integers(lo, hi + 1))
    w, h = img.size
    size = (target, max(1, round(h * target / w))) if w > h else (max(1, round(w * target / h)), target)
    return img.resize(size, resample=Image.BICUBIC)


def _adjust_hue(img: Image.Image, factor: float) -> Image.Image:
    h, s, v = img.convert("HSV").split()
    arr = np.asarray(h, dtype=np.uint8)
    arr = (arr.astype(np.int16) + int(factor * 255)) % 256  # torchvision: np_h += uint8(f*255), wrapping
    h = Image.fromarray(arr.astype(np.uint8), "L")
    return Image.merge("HSV", (h, s, v)).convert("RGB")


def color_jitter(img: Image.Image, rng: np.random.Generator,
                 brightness: float = 0.3, contrast: float = 0.3, saturation: float = 0.3,
                 hue: float = 0.1) -> Image.Image:
    """torchvision ColorJitter semantics: factors uniform in [1-x, 1+x] (hue in [-h, h]),
    the four adjustments applied in a random order."""
    ops = []
    if brightness > 0:
        f = rng.uniform(max(0.0, 1 - brightness), 1 + brightness)
        ops.append(lambda im, f=f: ImageEnhance.Brightness(im).enhance(f))
    if contrast > 0:
        f = rng.uniform(max(0.0, 1 - contrast), 1 + contrast)
        ops.append(lambda im, f=f: ImageEnhance.Contrast(im).enhance(f))
    if saturation > 0:
        f = rng.uniform(max(0.0, 1 - saturation), 1 + saturation)
        ops.append(lambda im, f=f: ImageEnhance.Color(im).enhance(f))
    if hue > 0:
        f = rng.uniform(-hue, hue)
        ops.append(lambda im, f=f: _adjust_hue(im, f))
    for i in rng.permutation(len(ops)):
        img = ops[i](img)
    return img


def random_crop(arr: np.ndarray, crop: int, rng: np.random.Generator) -> np.ndarray:
    """The authors' RandomCrop: (H, W, C) -> (crop, crop, C); a smaller image is placed at
    a random offset in a zero container, a larger one is cropped at a random offset."""
    h, w = arr.shape[:2]
    ch, cw = min(crop, h), min(crop, w)
    if w > crop:
        cont_left, img_left = 0, int(rng.integers(0, w - crop + 1))
    else:
        cont_left, img_left = int(rng.integers(0, crop - w + 1)), 0
    if h > crop:
        cont_top, img_top = 0, int(rng.integers(0, h - crop + 1))
    else:
        cont_top, img_top = int(rng.integers(0, crop - h + 1)), 0
    out = np.zeros((crop, crop, arr.shape[2]), dtype=np.float32)
    out[cont_top:cont_top + ch, cont_left:cont_left + cw] = arr[img_top:img_top + ch, img_left:img_left + cw]
    return out


def crop_with_label(image: np.ndarray, label: np.ndarray, crop: int,
                    rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """`random_crop` applied jointly to an (H, W, 3) image and its (H, W) label map ->
    (image (crop, crop, 3) float32 with 0 outside the image, label (crop, crop) int64
    with -1 outside)."""
    joint = np.concatenate([image.astype(np.float32, copy=False), label[..., None].astype(np.float32) + 1], axis=-1)
    joint = random_crop(joint, crop, rng)
    return joint[..., :3], joint[..., 3].astype(np.int64) - 1


class LabelledImageDataset(torch.utils.data.Dataset):
    """(image, label PNG) pairs keyed (index, epoch), each sample drawn with the generator
    default_rng([seed, epoch, index]); subclasses turn `load(key)` into tensors."""

    default_config: Any = None  # the augmentation config class, used when cfg is None
    error: type[Exception] = ValueError  # raised for an undecodable image

    def __init__(self, image_paths: Sequence[Path], label_paths: Sequence[Path], cfg: Any = None,
                 seed: int = 0) -> None:
        if len(image_paths) != len(label_paths):
            raise ValueError("one label per image")
        self.image_paths, self.label_paths, self.seed = list(image_paths), list(label_paths), seed
        self.cfg = cfg if cfg is not None else self.default_config()

    def __len__(self) -> int:
        return len(self.image_paths)

    def load(self, key: int | tuple[int, int]) -> tuple[Image.Image, np.ndarray, np.random.Generator, int]:
        """-> (RGB image, label map, the sample's generator, index)."""
        index, epoch = (key, 0) if isinstance(key, (int, np.integer)) else key
        try:
            img = open_image(self.image_paths[index])
        except ImageDecodeError as exc:
            raise self.error(f"{self.image_paths[index]}: {exc}") from exc
        label = read_label_png(self.label_paths[index])
        return img, label, np.random.default_rng([self.seed, epoch, index]), index


def augment(img: Image.Image, cfg: AugmentConfig, rng: np.random.Generator) -> np.ndarray:
    """RGB PIL image -> (3, crop, crop) float32, normalised, ready for the network."""
    lo, hi = cfg.resize_range
    img = random_resize_long(img, lo, hi, rng)
    if cfg.flip and rng.random() < 0.5:
        img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    if cfg.jitter is not None:
        img = color_jitter(img, rng, *cfg.jitter)
    x = cfg.normalization(np.asarray(img, dtype=np.uint8))  # (3, H, W)
    x = random_crop(x.transpose(1, 2, 0), cfg.crop, rng)  # (crop, crop, 3), pad 0
    return np.ascontiguousarray(x.transpose(2, 0, 1))


class AugmentedDataset(torch.utils.data.Dataset):
    """Training samples: key (index, epoch) -> (image (3, crop, crop) float32, label (num_fg,), index).

    The augmentation RNG is np.random.default_rng([seed, epoch, index]): a sample is
    the same whatever the worker count and after a resume.
    """

    def __init__(self, images: ImageLabelSet, aug: AugmentConfig, seed: int = 0) -> None:
        self.images, self.aug, self.seed = images, aug, seed

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor, int]:
        index, epoch = (key, 0) if isinstance(key, (int, np.integer)) else key
        path = self.images.paths[index]
        try:
            img = open_image(path)
        except ImageDecodeError as exc:
            raise DatasetError(f"{path}: {exc}") from exc
        x = augment(img, self.aug, np.random.default_rng([self.seed, epoch, index]))
        return torch.from_numpy(x), torch.from_numpy(self.images.labels[index]), index
