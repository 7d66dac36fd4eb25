"""Encoders for API responses and job outputs.

Thin wrappers over `seam.common.encoders` (shared with the CLIs) with a local
fallback while that module is absent, so the service's output formats are defined
in one place for the API and the workers.
"""
from __future__ import annotations

import base64
import io
import json
from collections.abc import Sequence

import numpy as np
from PIL import Image

from seam.common.cam import CamResult
from seam.common.palette import colorize, label_to_pil


# --- PNG ---------------------------------------------------------------------------
def png_label(label: np.ndarray) -> bytes:
    """(H, W) label map -> VOC-palette PNG bytes."""
    buf = io.BytesIO()
    label_to_pil(label).save(buf, format="PNG", optimize=False)
    return buf.getvalue()


def png_rgb(rgb: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(rgb, dtype=np.uint8), mode="RGB").save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


# --- overlays ----------------------------------------------------------------------
def jet(x: np.ndarray) -> np.ndarray:
    """[0, 1] -> (..., 3) uint8 jet colour map."""
    x = np.clip(x.astype(np.float32), 0.0, 1.0)[..., None]
    rgb = np.clip(1.5 - np.abs(4.0 * x - np.asarray([3.0, 2.0, 1.0], np.float32)), 0.0, 1.0)
    return (rgb * 255).astype(np.uint8)


def heatmap_overlay(rgb: np.ndarray, cam: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """CAM (H, W) in [0, 1] as a jet heat map blended over the image."""
    out = (1 - alpha) * rgb.astype(np.float32) + alpha * jet(cam).astype(np.float32)
    return out.astype(np.uint8)


def mask_overlay(rgb: np.ndarray, label: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """VOC colours blended over the foreground pixels; background left as is."""
    out = rgb.astype(np.float32)
    fg = (label > 0) & (label != 255)
    out[fg] = (1 - alpha) * out[fg] + alpha * colorize(label)[fg].astype(np.float32)
    return out.astype(np.uint8)


def tile_overlays(rgb: np.ndarray, cams: np.ndarray) -> np.ndarray:
    """One heat-map overlay per class, side by side; no class -> the image itself."""
    if cams.shape[0] == 0:
        return rgb
    return np.concatenate([heatmap_overlay(rgb, c) for c in cams], axis=1)


# --- COCO RLE ----------------------------------------------------------------------
def rle_counts(mask: np.ndarray) -> list[int]:
    """Column-major run lengths starting with a (possibly empty) run of zeros, as COCO."""
    flat = np.asarray(mask, dtype=bool).reshape(mask.shape).T.reshape(-1)
    if flat.size == 0:
        return [0]
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    bounds = np.concatenate([[0], change, [flat.size]])
    runs = np.diff(bounds).tolist()
    return ([0] + runs) if flat[0] else runs


def rle_to_string(counts: Sequence[int]) -> str:
    """pycocotools' compressed counts string (rleToString)."""
    out = []
    for i, x in enumerate(counts):
        x = int(x)
        if i > 2:
            x -= int(counts[i - 2])
        more = True
        while more:
            c = x & 0x1F
            x >>= 5
            more = (x != -1) if (c & 0x10) else (x != 0)
            if more:
                c |= 0x20
            out.append(chr(c + 48))
    return "".join(out)


def rle_from_string(s: str) -> list[int]:
    counts: list[int] = []
    p = 0
    while p < len(s):
        x = k = 0
        more = True
        while more:
            c = ord(s[p]) - 48
            x |= (c & 0x1F) << (5 * k)
            more = bool(c & 0x20)
            p += 1
            k += 1
            if not more and (c & 0x10):
                x |= -1 << (5 * k)
        if len(counts) > 2:
            x += counts[-2]
        counts.append(x)
    return counts


def coco_rle(mask: np.ndarray) -> dict:
    """COCO compressed RLE {"size": [h, w], "counts": str} of a boolean (H, W) mask."""
    h, w = mask.shape
    return {"size": [int(h), int(w)], "counts": rle_to_string(rle_counts(mask))}


def coco_rle_decode(rle: dict) -> np.ndarray:
    h, w = rle["size"]
    counts = rle_from_string(rle["counts"]) if isinstance(rle["counts"], str) else list(rle["counts"])
    flat = np.zeros(h * w, dtype=bool)
    pos, val = 0, False
    for n in counts:
        if val:
            flat[pos:pos + n] = True
        pos += n
        val = not val
    return flat.reshape(w, h).T


def bbox(mask: np.ndarray) -> list[int]:
    ys, xs = np.nonzero(mask)
    if ys.size == 0:
        return [0, 0, 0, 0]
    return [int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)]


def coco_annotations(label: np.ndarray, classes: Sequence[int], scores: np.ndarray | None = None,
                     image_id: int | str = 0) -> list[dict]:
    """One COCO annotation per foreground class present in the label map.

    category_id = foreground index + 1 (= the label value; 0 stays background).
    """
    anns = []
    for c in classes:
        mask = label == c + 1
        area = int(mask.sum())
        if area == 0:
            continue
        ann = {"image_id": image_id, "category_id": int(c) + 1, "segmentation": coco_rle(mask),
               "area": area, "bbox": bbox(mask), "iscrowd": 0}
        if scores is not None and c < len(scores):
            ann["score"] = float(scores[c])
        anns.append(ann)
    return anns


def coco_categories(names: Sequence[str]) -> list[dict]:
    return [{"id": i + 1, "name": n, "supercategory": "object"} for i, n in enumerate(names)]


# --- CAM npz ------------------------------------------------------------------------
def cams_npz(res: CamResult, names: Sequence[str]) -> bytes:
    """npz with one (H, W) float32 array per present class, keyed by class name, plus
    `__classes__` (foreground indices) and `__scores__` (all classes). Loads with
    allow_pickle=False."""
    arrays: dict[str, np.ndarray] = {names[c]: res.cams[i].astype(np.float32) for i, c in enumerate(res.classes)}
    arrays["__classes__"] = np.asarray(res.classes, dtype=np.int32)
    arrays["__scores__"] = np.asarray(res.scores, dtype=np.float32)
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    return buf.getvalue()


def b64_png(rgb: np.ndarray) -> str:
    return base64.b64encode(png_rgb(rgb)).decode("ascii")


def dumps(obj: object) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()
