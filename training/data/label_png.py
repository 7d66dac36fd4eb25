"""Reading VOC-style label PNGs (torch-free): ground truth, pseudo labels and AffinityNet
labels are all (H, W) uint8 class maps with 255 = ignore. It sits on the data floor, the
lowest of training/, because the data sets read labels and evaluation scores them."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from seam.common.palette import voc_palette


def read_label_png(path: str | Path) -> np.ndarray:
    """(H, W) uint8 label map from a palette/greyscale PNG, or an RGB one in VOC colours."""
    try:
        with Image.open(path) as img:
            img.load()
            if img.mode in ("P", "L"):
                return np.asarray(img, dtype=np.uint8)
            if img.mode in ("I", "I;16"):
                return np.asarray(img).astype(np.uint8)
            rgb = np.asarray(img.convert("RGB"), dtype=np.uint8)
    except (OSError, SyntaxError) as exc:
        raise ValueError(f"{path}: not a readable PNG ({exc})") from exc
    # RGB label images (re-saved by some tool): map colours back through the palette
    pal = voc_palette().astype(np.int64)
    key = (pal[:, 0] << 16) | (pal[:, 1] << 8) | pal[:, 2]
    flat = (rgb[..., 0].astype(np.int64) << 16) | (rgb[..., 1].astype(np.int64) << 8) | rgb[..., 2]
    order = np.argsort(key, kind="stable")
    pos = np.clip(np.searchsorted(key[order], flat), 0, 255)
    idx = order[pos]
    if not np.all(key[idx] == flat):
        raise ValueError(f"{path}: RGB label image has colours outside the VOC palette")
    return idx.astype(np.uint8)
