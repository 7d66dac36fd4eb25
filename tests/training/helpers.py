"""Small data sets the training tests share."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from seam.common.palette import label_to_pil


def tiny_set(root: Path, n: int = 4, size: int = 64) -> tuple[Path, Path]:
    """n images with one 16x16 square of class 1 or 2 each, and their VOC-palette labels."""
    rng = np.random.default_rng(0)
    img_dir, lab_dir = root / "images", root / "labels"
    img_dir.mkdir()
    lab_dir.mkdir()
    for i in range(n):
        label = np.zeros((size, size), np.uint8)
        y, x = rng.integers(8, size - 24, 2)
        label[y:y + 16, x:x + 16] = 1 + i % 2
        rgb = np.where(label[..., None] > 0, np.array([200, 40, 40], np.uint8), np.array([30, 30, 30], np.uint8))
        Image.fromarray(rgb.astype(np.uint8)).save(img_dir / f"im{i}.png")
        label_to_pil(label).save(lab_dir / f"im{i}.png")
    (lab_dir / "classes.txt").write_text("background\na\nb\n")
    return img_dir, lab_dir
