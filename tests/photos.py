"""Photo-like test images of any size and aspect with the bundled demo model's shapes.

Not square, not small, not clean: a lit gradient, smooth colour blotches and sensor
noise behind shapes drawn the way `seam synth` draws its classes (disc red with dark
spots, square blue striped, triangle green shaded, ring yellow, cross purple
checkered), so the demo model finds them the way it finds its training images. numpy
only (no torch, no training package): service and browser tests import it.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

DEMO_CLASSES: tuple[str, ...] = ("disc", "square", "triangle", "ring", "cross")
_COLOURS = {"disc": (205, 55, 45), "square": (45, 75, 205), "triangle": (55, 170, 60), "ring": (230, 200, 45),
            "cross": (145, 55, 175)}


@dataclass(frozen=True)
class Shape:
    """One object: class name, centre (fractions of width and height), radius (fraction of the short side)."""

    name: str
    cx: float
    cy: float
    r: float = 0.3


def _smooth(rng: np.random.Generator, h: int, w: int, cells: int) -> np.ndarray:
    """(h, w) smooth noise in about [-1, 1]: a coarse random grid, bilinearly enlarged."""
    gh, gw = cells + 1, max(2, int(round(cells * w / h)) + 1)
    grid = rng.uniform(-1, 1, (gh, gw)).astype(np.float32)
    ys = np.linspace(0, gh - 1, h, dtype=np.float32)
    xs = np.linspace(0, gw - 1, w, dtype=np.float32)
    y0 = np.minimum(ys.astype(np.int64), gh - 2)
    x0 = np.minimum(xs.astype(np.int64), gw - 2)
    fy, fx = (ys - y0)[:, None], (xs - x0)[None, :]
    a, b = grid[y0][:, x0], grid[y0][:, x0 + 1]
    c, d = grid[y0 + 1][:, x0], grid[y0 + 1][:, x0 + 1]
    return (a * (1 - fy) * (1 - fx) + b * (1 - fy) * fx + c * fy * (1 - fx) + d * fy * fx).astype(np.float32)


def _mask_and_shade(name: str, u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if name == "disc":
        shade = np.ones(u.shape, np.float32)
        for px, py in ((-0.4, -0.3), (0.35, 0.1), (-0.1, 0.5), (0.3, -0.5)):
            shade[(u - px) ** 2 + (v - py) ** 2 <= 0.17 ** 2] = 0.45
        return u * u + v * v <= 1, shade
    if name == "square":
        return (np.abs(u) <= 0.82) & (np.abs(v) <= 0.82), np.where(np.sin(2 * np.pi * u * 3) > 0, 1.0, 0.55)
    if name == "triangle":
        inside = np.ones(u.shape, bool)
        for a in (np.pi / 2, np.pi / 2 + 2 * np.pi / 3, np.pi / 2 + 4 * np.pi / 3):
            inside &= u * np.cos(a) + v * np.sin(a) >= -0.5
        return inside, 0.75 + 0.25 * np.clip(-v, -1, 1)
    if name == "ring":
        rho = u * u + v * v
        return (rho <= 1) & (rho >= 0.38), 1.05 - 0.3 * np.abs(np.sqrt(rho) - 0.8)
    if name == "cross":
        w = 0.31
        mask = ((np.abs(u) <= w) & (np.abs(v) <= 1)) | ((np.abs(u) <= 1) & (np.abs(v) <= w))
        return mask, np.where((np.floor(u * 2.5) + np.floor(v * 2.5)) % 2 == 0, 1.0, 0.6)
    raise ValueError(f"unknown demo class {name!r} (have {', '.join(DEMO_CLASSES)})")


def demo_photo(w: int, h: int, shapes: Sequence[Shape], seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(H, W, 3) uint8 photo-like image and its (H, W) uint8 ground truth (0 background,
    c + 1 for demo class c). Works in row strips so that 4000x3000 stays a few hundred MB."""
    rng = np.random.default_rng(seed)
    base = rng.uniform(90, 150, 3).astype(np.float32)
    light = rng.uniform(-40, 40, 2).astype(np.float32)  # gradient across x and y
    blotch = np.stack([_smooth(rng, h, w, 4) for _ in range(3)], axis=-1)
    label = np.zeros((h, w), np.uint8)
    img = np.empty((h, w, 3), np.uint8)
    short = min(w, h)
    xs = np.arange(w, dtype=np.float32) + 0.5
    for r0 in range(0, h, 512):
        ys = np.arange(r0, min(h, r0 + 512), dtype=np.float32) + 0.5
        yy, xx = np.meshgrid(ys, xs, indexing="ij")
        strip = (base + light[0] * (xx / w - 0.5)[..., None] + light[1] * (yy / h - 0.5)[..., None]
                 + 30 * blotch[r0:r0 + len(ys)])
        lab = label[r0:r0 + len(ys)]
        for s in shapes:
            r = s.r * short
            u, v = (xx - s.cx * w) / r, (yy - s.cy * h) / r
            mask, shade = _mask_and_shade(s.name, u, v)
            strip[mask] = (np.asarray(_COLOURS[s.name], np.float32) * shade[..., None])[mask]
            lab[mask] = DEMO_CLASSES.index(s.name) + 1
        strip += rng.normal(0, 5.0, strip.shape).astype(np.float32)
        img[r0:r0 + len(ys)] = np.clip(strip, 0, 255).astype(np.uint8)
    return img, label
