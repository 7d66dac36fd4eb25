"""The PASCAL VOC colour palette, used for every label PNG we write."""
from __future__ import annotations

from functools import lru_cache

import numpy as np
from PIL import Image


@lru_cache(maxsize=1)
def voc_palette() -> np.ndarray:
    """(256, 3) uint8: VOC's bit-interleaved colour map; 255 (ignore) is (224, 224, 192)."""
    pal = np.zeros((256, 3), dtype=np.uint8)
    for i in range(256):
        c, r, g, b = i, 0, 0, 0
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        pal[i] = (r, g, b)
    pal.flags.writeable = False
    return pal


def label_to_pil(label: np.ndarray) -> Image.Image:
    """A (H, W) integer label map as a palette ('P' mode) PNG-ready image."""
    if label.ndim != 2:
        raise ValueError(f"label map must be 2-D, got shape {label.shape}")
    img = Image.fromarray(label.astype(np.uint8), mode="P")
    img.putpalette(voc_palette().reshape(-1).tolist())
    return img


def colorize(label: np.ndarray) -> np.ndarray:
    """(H, W) labels -> (H, W, 3) uint8 RGB."""
    return voc_palette()[label.astype(np.uint8)]
