"""A small synthetic dataset in the PASCAL VOC layout, for tests and smoke runs.

Five foreground classes differ by shape, texture and colour. The generator builds
in the two failure modes SEAM is about: context that co-occurs with a class
(discs under a sky band, triangles over grass, rings with a shadow, crosses on a
pole), which tempts CAMs to over-activate, and objects partly hidden by other
objects, fences, blobs or the image border, which makes them under-activate.
numpy + Pillow only; every image depends only on (seed, index).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

from seam.common.cam import resize_bilinear
from seam.common.classes import IGNORE_INDEX
from seam.common.palette import label_to_pil

SYNTH_CLASSES: tuple[str, ...] = ("background", "disc", "square", "triangle", "ring", "cross")
DISC, SQUARE, TRIANGLE, RING, CROSS = range(5)  # foreground indices, as in cls_labels.npy
BASE_COLOURS = np.array([
    [205, 55, 45],   # disc: red, dark spots
    [45, 75, 205],   # square: blue, stripes
    [55, 170, 60],   # triangle: green, shaded
    [230, 200, 45],  # ring: yellow
    [145, 55, 175],  # cross: purple, checkered
], dtype=np.float32)
CONTEXT_PROB = 0.8        # chance that a class's context comes with it
STRAY_CONTEXT_PROB = 0.08  # chance of the context without the class
OCCLUDER_PROB = 0.35       # fences / blobs drawn over the objects
JPEG_QUALITY = 90


@dataclass(frozen=True)
class SynthObject:
    """One drawn object. area: its shape's pixels inside the frame; shown: those not covered
    by later objects or occluders; visible: those labelled with its class (shown minus the
    ignore band)."""

    cls: int
    center: tuple[float, float]
    radius: float
    area: int
    shown: int
    visible: int


@dataclass
class SynthInfo:
    root: Path
    image_dir: Path
    label_dir: Path
    train_list: Path
    val_list: Path
    cls_labels: Path
    classes_file: Path
    class_names: tuple[str, ...]
    train_ids: list[str]
    val_ids: list[str]
    objects: dict[str, list[SynthObject]] = field(default_factory=dict, repr=False)

    @property
    def ids(self) -> list[str]:
        return self.train_ids + self.val_ids


def image_id(index: int) -> str:
    return f"synth_{index + 1:06d}"


def generate(out: Path, n: int, seed: int, size: int = 160, val_fraction: float = 0.25,
             on_image: Callable[[str], None] | None = None) -> SynthInfo:
    """Write `n` images with VOC-style labels under `out`; deterministic for (seed, n, size).

    Layout: JPEGImages/<id>.jpg, SegmentationClass/<id>.png (VOC palette, 255 on a
    thin band around objects), ImageSets/Segmentation/{train,val,trainval}.txt,
    cls_labels.npy (pickled dict id -> float32 multi-hot, as the authors' file),
    classes.txt. `on_image(id)` is called after each image (progress bars).
    """
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    if size < 32:
        raise ValueError(f"size must be at least 32 pixels, got {size}")
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    out = Path(out)
    info = SynthInfo(
        root=out, image_dir=out / "JPEGImages", label_dir=out / "SegmentationClass",
        train_list=out / "ImageSets" / "Segmentation" / "train.txt",
        val_list=out / "ImageSets" / "Segmentation" / "val.txt",
        cls_labels=out / "cls_labels.npy", classes_file=out / "classes.txt",
        class_names=SYNTH_CLASSES, train_ids=[], val_ids=[],
    )
    for d in (info.image_dir, info.label_dir, info.train_list.parent):
        d.mkdir(parents=True, exist_ok=True)
    num_fg = len(SYNTH_CLASSES) - 1
    n_val = min(int(round(n * val_fraction)), n - 1)
    labels: dict[str, np.ndarray] = {}
    for i in range(n):
        iid = image_id(i)
        rgb, label, objects = render_image(np.random.default_rng([seed, i]), size)
        Image.fromarray(rgb).save(info.image_dir / f"{iid}.jpg", quality=JPEG_QUALITY)
        label_to_pil(label).save(info.label_dir / f"{iid}.png")
        present = np.unique(label[(label > 0) & (label != IGNORE_INDEX)]).astype(np.int64) - 1
        vec = np.zeros(num_fg, np.float32)
        vec[present] = 1.0
        labels[iid] = vec
        info.objects[iid] = objects
        (info.train_ids if i < n - n_val else info.val_ids).append(iid)
        if on_image is not None:
            on_image(iid)
    info.train_list.write_text("".join(f"{i}\n" for i in info.train_ids))
    info.val_list.write_text("".join(f"{i}\n" for i in info.val_ids))
    (info.train_list.parent / "trainval.txt").write_text("".join(f"{i}\n" for i in info.ids))
    np.save(info.cls_labels, labels)  # the authors' format: a pickled dict
    info.classes_file.write_text("".join(f"{c}\n" for c in SYNTH_CLASSES))
    return info


def render_image(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray, list[SynthObject]]:
    """(H, W, 3) uint8 image, (H, W) uint8 label (0 bg, c+1, 255 ignore) and the objects drawn."""
    while True:  # a layout whose objects all end up hidden is redrawn
        rgb, label, objects = _render(rng, size)
        if objects:
            return rgb, label, objects


def _render(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray, list[SynthObject]]:
    s = size
    yy, xx = np.mgrid[0:s, 0:s].astype(np.float32) + 0.5
    img = _background(rng, s)
    owner = np.full((s, s), -1, np.int64)  # which object each pixel shows, -1 = background

    n_obj = int(rng.choice([1, 2, 3], p=[0.3, 0.4, 0.3]))
    classes = [int(c) for c in rng.integers(0, 5, n_obj)]
    present = set(classes)
    # scene-level context bands, strongly but not perfectly tied to a class
    sky = rng.random() < (CONTEXT_PROB if DISC in present else STRAY_CONTEXT_PROB)
    grass = rng.random() < (CONTEXT_PROB if TRIANGLE in present else STRAY_CONTEXT_PROB)
    if sky:
        _sky_band(rng, img, yy, s)
    if grass:
        _grass_band(rng, img, yy, xx, s)

    placed: list[tuple[float, float, float]] = []
    masks: list[np.ndarray] = []
    for j, cls in enumerate(classes):
        r = float(rng.uniform(0.12, 0.26) * s)
        cx, cy = _centre(rng, cls, r, placed, s, sky, grass)
        theta = float(rng.uniform(0, 2 * np.pi))
        c, sn = np.cos(theta), np.sin(theta)
        u = ((xx - cx) * c + (yy - cy) * sn) / r  # object-local coordinates, rotate with it
        v = (-(xx - cx) * sn + (yy - cy) * c) / r
        if rng.random() < CONTEXT_PROB:
            if cls == RING:
                _shadow(rng, img, owner, xx, yy, cx, cy, r)
            elif cls == CROSS:
                _pole(rng, img, owner, xx, yy, cx, cy, r, s)
        mask = _shape_mask(cls, u, v, rng)
        img[mask] = _texture(cls, u, v, rng)[mask]
        owner[mask] = j
        placed.append((cx, cy, r))
        masks.append(mask)

    if rng.random() < OCCLUDER_PROB:
        _occluders(rng, img, owner, xx, yy, placed, s)

    label, objects = _label_and_objects(classes, owner, placed, masks)
    if not any(o.visible for o in objects):
        return img.astype(np.uint8), label, []

    # camera: slight blur (soft edges) and sensor noise
    pil = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).filter(ImageFilter.GaussianBlur(0.6))
    out = np.asarray(pil, np.float32) + rng.normal(0, 5.0, (s, s, 3)).astype(np.float32)
    return np.clip(out, 0, 255).astype(np.uint8), label, objects


def _centre(rng: np.random.Generator, cls: int, r: float, placed: list[tuple[float, float, float]], s: int,
            sky: bool, grass: bool) -> tuple[float, float]:
    """Where an object of radius `r` goes: half the time next to an earlier one (they overlap),
    else anywhere, discs near the sky band and triangles on the grass most of the time."""
    if placed and rng.random() < 0.5:
        px, py, pr = placed[int(rng.integers(len(placed)))]
        ang = rng.uniform(0, 2 * np.pi)
        dist = rng.uniform(0.45, 0.95) * (pr + r)
        cx, cy = px + dist * np.cos(ang), py + dist * np.sin(ang)
    else:
        cx, cy = rng.uniform(0.1, 0.9, 2) * s
        if cls == DISC and sky and rng.random() < 0.7:
            cy = rng.uniform(0.15, 0.5) * s
        if cls == TRIANGLE and grass and rng.random() < 0.7:
            cy = rng.uniform(0.5, 0.8) * s
    return float(np.clip(cx, 0, s)), float(np.clip(cy, 0, s))  # at least a quarter in the frame


def _label_and_objects(classes: list[int], owner: np.ndarray, placed: list[tuple[float, float, float]],
                       masks: list[np.ndarray]) -> tuple[np.ndarray, list[SynthObject]]:
    """The label map (object boundaries ignored) and what each object left visible in it."""
    label = np.zeros(owner.shape, np.uint8)
    for j, cls in enumerate(classes):
        label[owner == j] = cls + 1
    label[_boundary(label)] = IGNORE_INDEX
    objects = []
    for j, cls in enumerate(classes):
        mine = owner == j
        objects.append(SynthObject(cls, (placed[j][0], placed[j][1]), placed[j][2], int(masks[j].sum()),
                                   int(mine.sum()), int(np.count_nonzero(label[mine] == cls + 1))))
    return label, objects


def _smooth_noise(rng: np.random.Generator, s: int, cells: int, channels: int) -> np.ndarray:
    """(channels, s, s) smooth random field in about [-1, 1]."""
    grid = rng.normal(0, 0.6, (channels, cells, cells)).astype(np.float32)
    return resize_bilinear(grid, (s, s), align_corners=True)


def _background(rng: np.random.Generator, s: int) -> np.ndarray:
    """Muted base colour, smooth colour blotches, a faint texture and random clutter."""
    base = rng.uniform(70, 170, 3).astype(np.float32)
    img = base + 35 * _smooth_noise(rng, s, int(rng.integers(3, 7)), 3).transpose(1, 2, 0)
    yy, xx = np.mgrid[0:s, 0:s].astype(np.float32)
    kind = rng.integers(3)
    if kind == 0:  # faint stripes at a random angle and period
        ang = rng.uniform(0, np.pi)
        period = rng.uniform(4, 14)
        img += 12 * np.sin(2 * np.pi * (xx * np.cos(ang) + yy * np.sin(ang)) / period)[..., None]
    elif kind == 1:  # speckle
        img += rng.normal(0, 14, (s, s, 1)).astype(np.float32)
    # clutter: ellipses and bars in muted colours, labelled background
    for _ in range(int(rng.integers(2, 7))):
        col = rng.uniform(40, 200, 3).astype(np.float32)
        col = 0.6 * col + 0.4 * col.mean()  # desaturate so clutter rarely matches a class colour
        cx, cy = rng.uniform(0, s, 2)
        if rng.random() < 0.6:
            a, b = rng.uniform(0.04, 0.15, 2) * s
            ang = rng.uniform(0, np.pi)
            du, dv = xx - cx, yy - cy
            u = (du * np.cos(ang) + dv * np.sin(ang)) / a
            v = (-du * np.sin(ang) + dv * np.cos(ang)) / b
            m = u * u + v * v <= 1
        else:
            ang = rng.uniform(0, np.pi)
            half_w, half_l = rng.uniform(1, 3), rng.uniform(0.1, 0.4) * s
            du, dv = xx - cx, yy - cy
            m = (np.abs(du * np.cos(ang) + dv * np.sin(ang)) <= half_l) & (
                np.abs(-du * np.sin(ang) + dv * np.cos(ang)) <= half_w)
        alpha = rng.uniform(0.5, 1.0)
        img[m] = (1 - alpha) * img[m] + alpha * col
    return img


def _sky_band(rng: np.random.Generator, img: np.ndarray, yy: np.ndarray, s: int) -> None:
    h = rng.uniform(0.25, 0.45) * s
    t = np.clip(yy / h, 0, 1)[..., None]
    top = np.array([95, 150, 235], np.float32) + rng.uniform(-15, 15, 3)
    low = np.array([205, 222, 245], np.float32) + rng.uniform(-10, 10, 3)
    sky = (1 - t) * top + t * low + 8 * _smooth_noise(rng, s, 4, 1).transpose(1, 2, 0)
    m = yy < h
    img[m] = sky[m]


def _grass_band(rng: np.random.Generator, img: np.ndarray, yy: np.ndarray, xx: np.ndarray, s: int) -> None:
    top = s - rng.uniform(0.2, 0.35) * s
    wave = top + 3 * np.sin(xx / rng.uniform(4, 9))  # ragged horizon
    m = yy >= wave
    col = np.array([70, 135, 50], np.float32) + rng.uniform(-15, 15, 3)
    blades = 25 * np.sin(xx * rng.uniform(1.5, 2.5) + 3 * _smooth_noise(rng, s, 6, 1)[0])  # vertical streaks
    grass = col + blades[..., None] * np.array([0.5, 1.0, 0.4], np.float32) + rng.normal(0, 10, (s, s, 1))
    img[m] = grass[m]


def _shadow(rng: np.random.Generator, img: np.ndarray, owner: np.ndarray, xx: np.ndarray, yy: np.ndarray,
            cx: float, cy: float, r: float) -> None:
    """A dark ellipse offset below-right of a ring; shows through the ring's hole too."""
    ox, oy = r * rng.uniform(0.2, 0.4), r * rng.uniform(0.25, 0.45)
    m = ((xx - cx - ox) / (1.15 * r)) ** 2 + ((yy - cy - oy) / (0.9 * r)) ** 2 <= 1
    img[m] *= 0.35
    owner[m] = -1


def _pole(rng: np.random.Generator, img: np.ndarray, owner: np.ndarray, xx: np.ndarray, yy: np.ndarray,
          cx: float, cy: float, r: float, s: int) -> None:
    """A brown post from the cross down to the bottom edge, as a signpost."""
    half = r * rng.uniform(0.12, 0.2)
    m = (np.abs(xx - cx) <= half) & (yy >= cy)
    wood = np.array([110, 75, 40], np.float32) + rng.uniform(-15, 15, 3)
    img[m] = wood + 10 * np.sin(yy[m] / 2.0)[:, None]
    owner[m] = -1


def _shape_mask(cls: int, u: np.ndarray, v: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    if cls == DISC:
        b = rng.uniform(0.75, 1.0)
        return u * u + (v / b) ** 2 <= 1
    if cls == SQUARE:
        b = rng.uniform(0.65, 1.0)
        return (np.abs(u) <= 0.82) & (np.abs(v) <= 0.82 * b)
    if cls == TRIANGLE:
        # equilateral, circumradius 1: three half-planes at 120 degrees
        inside = np.ones(u.shape, bool)
        for a in (np.pi / 2, np.pi / 2 + 2 * np.pi / 3, np.pi / 2 + 4 * np.pi / 3):
            inside &= u * np.cos(a) + v * np.sin(a) >= -0.5
        return inside
    if cls == RING:
        rho = u * u + v * v
        return (rho <= 1) & (rho >= rng.uniform(0.3, 0.45))
    w = rng.uniform(0.26, 0.36)  # cross
    return ((np.abs(u) <= w) & (np.abs(v) <= 1)) | ((np.abs(u) <= 1) & (np.abs(v) <= w))


def _texture(cls: int, u: np.ndarray, v: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """(H, W, 3) float colour of the object's surface, in its local frame."""
    col = BASE_COLOURS[cls] + rng.uniform(-20, 20, 3)
    col = col * rng.uniform(0.85, 1.12)
    if cls == DISC:
        shade = np.ones(u.shape, np.float32)
        for _ in range(int(rng.integers(5, 10))):
            px, py = rng.uniform(-0.75, 0.75, 2)
            shade[(u - px) ** 2 + (v - py) ** 2 <= rng.uniform(0.12, 0.22) ** 2] = 0.45
    elif cls == SQUARE:
        shade = np.where(np.sin(2 * np.pi * u * rng.uniform(2.5, 3.5)) > 0, 1.0, 0.55)
    elif cls == TRIANGLE:
        shade = 0.75 + 0.25 * np.clip(-v, -1, 1) + rng.normal(0, 0.05, u.shape)
    elif cls == RING:
        shade = 1.05 - 0.3 * np.abs(np.sqrt(u * u + v * v) - 0.8)
    else:
        shade = np.where((np.floor(u * 2.5) + np.floor(v * 2.5)) % 2 == 0, 1.0, 0.6)
    return shade[..., None].astype(np.float32) * col.astype(np.float32)


def _occluders(rng: np.random.Generator, img: np.ndarray, owner: np.ndarray, xx: np.ndarray, yy: np.ndarray,
               placed: list[tuple[float, float, float]], s: int) -> None:
    """Fence bars or a blob over an object: background in front of the foreground."""
    cx, cy, r = placed[int(rng.integers(len(placed)))]
    if rng.random() < 0.5:
        col = rng.uniform(90, 160) * np.ones(3, np.float32) + rng.uniform(-10, 10, 3)
        gap = rng.uniform(0.5, 0.9) * r
        for k in range(int(rng.integers(2, 5))):
            x0 = cx - r + k * gap + rng.uniform(-2, 2)
            m = np.abs(xx - x0) <= rng.uniform(1.5, 3.0)
            img[m] = col
            owner[m] = -1
    else:
        bx, by = cx + rng.uniform(-0.9, 0.9) * r, cy + rng.uniform(-0.9, 0.9) * r
        a, b = rng.uniform(0.35, 0.7, 2) * r
        m = ((xx - bx) / a) ** 2 + ((yy - by) / b) ** 2 <= 1
        img[m] = rng.uniform(50, 150, 3)
        owner[m] = -1


def _boundary(label: np.ndarray) -> np.ndarray:
    """Pixels with a differently labelled 8-neighbour: a 2 px band (one each side), like VOC's."""
    pad = np.pad(label, 1, mode="edge")
    h, w = label.shape
    edge = np.zeros(label.shape, bool)
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            if dy or dx:
                edge |= pad[1 + dy:1 + dy + h, 1 + dx:1 + dx + w] != label
    return edge
