"""VOC-style label PNGs (torch-free): ground truth, pseudo labels and AffinityNet labels
are all (H, W) uint8 class maps with 255 = ignore; reading them, pairing images with
them, and a cheap fingerprint of a label set (the AffinityNet and DeepLab trainers). It sits on the data floor, the
lowest of training/, because the data sets read labels and evaluation scores them."""
from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
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


def files_fingerprint(ids: Sequence[str], label_paths: Sequence[Path]) -> str:
    """sha256 over ids and label file sizes: cheap, catches a changed label set."""
    h = hashlib.sha256()
    for i, p in zip(ids, label_paths, strict=True):
        h.update(f"{i}\t{Path(p).stat().st_size}\n".encode())
    return h.hexdigest()


def labelled_items(items: Iterable[tuple[str, Path]], label_dir: Path) -> tuple[list[str], list[Path], list[Path]]:
    """(ids, image paths, label paths) of the (id, image path) items that have <label_dir>/<id>.png."""
    ids, paths, labels = [], [], []
    for i, p in items:
        lp = label_dir / f"{i}.png"
        if lp.is_file():
            ids.append(i)
            paths.append(p)
            labels.append(lp)
    return ids, paths, labels
