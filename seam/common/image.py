"""Image decoding and input normalisation shared by training and the service.

Everything here is numpy + Pillow so that the torch-free service and the training
code preprocess identically.
"""
from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)


class ImageDecodeError(ValueError):
    """The bytes are not a decodable image (or exceed the pixel limit)."""


def to_rgb(img: Image.Image) -> Image.Image:
    """EXIF orientation applied, then RGB (greyscale, palette, RGBA, CMYK, 16-bit all end here).

    Transparent pixels are composited on black, so RGBA inputs behave like the
    RGB image a viewer would show on a dark background rather than exposing
    whatever colour hides under alpha 0.
    """
    img = ImageOps.exif_transpose(img)
    if img.mode in ("RGBA", "LA") or (img.mode == "P" and "transparency" in img.info):
        img = img.convert("RGBA")
        bg = Image.new("RGBA", img.size, (0, 0, 0, 255))
        img = Image.alpha_composite(bg, img)
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(img, dtype=np.float64)
        hi = arr.max() if arr.size else 1.0
        img = Image.fromarray((arr / max(hi, 1.0) * 255).astype(np.uint8))
    return img.convert("RGB")


def open_image(src: str | Path | bytes, max_pixels: int | None = None) -> Image.Image:
    """Decode a file path or bytes into an RGB PIL image.

    `max_pixels` is checked against the header before decoding so that a
    decompression bomb never gets allocated.
    """
    try:
        fp = io.BytesIO(src) if isinstance(src, (bytes, bytearray)) else open(src, "rb")  # noqa: SIM115 - closed by the `with fp` below
    except OSError as exc:
        raise ImageDecodeError(f"cannot open image: {exc}") from exc
    with fp:
        try:
            img = Image.open(fp)
            w, h = img.size
            if max_pixels is not None and w * h > max_pixels:
                raise ImageDecodeError(
                    f"image is {w}x{h} = {w * h} pixels, over the limit of {max_pixels}"
                )
            img.load()
        except ImageDecodeError:
            raise
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
            raise ImageDecodeError(f"not a readable image: {exc}") from exc
        return to_rgb(img)


def load_rgb(src: str | Path | bytes, max_pixels: int | None = None) -> np.ndarray:
    """(H, W, 3) uint8 RGB array."""
    return np.asarray(open_image(src, max_pixels=max_pixels), dtype=np.uint8)


@dataclass(frozen=True)
class Normalization:
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD

    def __call__(self, rgb: np.ndarray) -> np.ndarray:
        """(H, W, 3) uint8 -> (3, H, W) float32, as the authors' Normalize + HWC_to_CHW."""
        x = rgb.astype(np.float32) / 255.0
        x = (x - np.asarray(self.mean, np.float32)) / np.asarray(self.std, np.float32)
        return np.ascontiguousarray(x.transpose(2, 0, 1))


def resize_rgb(rgb: np.ndarray, size_hw: tuple[int, int], resample: int = Image.BICUBIC) -> np.ndarray:
    """Resize a uint8 RGB array with Pillow (the authors rescale with PIL bicubic)."""
    h, w = size_hw
    if rgb.shape[:2] == (h, w):
        return rgb
    return np.asarray(Image.fromarray(rgb).resize((w, h), resample=resample), dtype=np.uint8)


def scaled_size(hw: tuple[int, int], scale: float) -> tuple[int, int]:
    """Python's round(), as the authors' multi-scale dataset used (banker's rounding)."""
    h, w = hw
    return max(1, int(round(h * scale))), max(1, int(round(w * scale)))
