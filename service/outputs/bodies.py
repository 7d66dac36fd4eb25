"""Response bodies of the synchronous routes (/segment, /cam), answered by the API process or
by a worker alike (`seam.service.realtime.compute`)."""
from __future__ import annotations

import base64
from collections.abc import Sequence

import numpy as np
from seam.service.engine.base import SegmentResult
from seam.service.outputs.coco import bbox

from seam.common.cam import DEFAULT_BG_THRESHOLD, CamResult
from seam.common.encoders import CamDtype, coco_rle, encode_cams_npz, encode_png_rgb, heatmap_overlay


def score_table(scores: np.ndarray, names: Sequence[str]) -> dict[str, float]:
    return {names[i]: round(float(s), 6) for i, s in enumerate(np.asarray(scores).reshape(-1)[: len(names)])}


def segment_json(seg: SegmentResult, names: Sequence[str], threshold: float | None) -> dict:
    h, w = seg.label.shape
    classes = []
    for c in seg.classes:
        mask = seg.label == c + 1
        classes.append({
            "index": int(c), "label": int(c) + 1, "name": names[c],
            "score": round(float(seg.scores[c]), 6) if c < len(seg.scores) else None,
            "area": int(mask.sum()), "bbox": bbox(mask), "rle": coco_rle(mask),
        })
    return {"width": int(w), "height": int(h), "method": seg.method,
            "threshold": DEFAULT_BG_THRESHOLD if threshold is None else float(threshold),
            "classes": classes, "scores": score_table(seg.scores, names)}


def cam_json(rgb: np.ndarray, res: CamResult, names: Sequence[str], refined: bool, threshold: float | None) -> dict:
    thr = DEFAULT_BG_THRESHOLD if threshold is None else float(threshold)
    h, w = rgb.shape[:2]
    stats = []
    for i, c in enumerate(res.classes):
        m = res.cams[i]
        above = int((m > thr).sum())
        stats.append({
            "index": int(c), "name": names[c],
            "score": round(float(res.scores[c]), 6) if c < len(res.scores) else None,
            "min": float(m.min()), "max": float(m.max()), "mean": float(m.mean()),
            "area": above / float(h * w), "area_pixels": above,
            "overlay_png": base64.b64encode(encode_png_rgb(heatmap_overlay(rgb, m))).decode("ascii"),
        })
    return {"width": int(w), "height": int(h), "refined": refined, "threshold": thr, "classes": stats,
            "scores": score_table(res.scores, names)}


def cams_npz(res: CamResult, names: Sequence[str], dtype: CamDtype = "float32",
             image_size: tuple[int, int] | None = None) -> bytes:
    """`seam.common.encoders.encode_cams_npz` with the classes' names: "classes" (K,), "cams"
    (K, H, W) C-ordered float32 (or float16, or uint8 = value / 255), "class_names" (K,), and
    "image_size" [h, w] when the maps are at the working size; loads with allow_pickle=False."""
    return encode_cams_npz(res.classes, res.cams, dtype, class_names=[names[c] for c in res.classes],
                           image_size=image_size)


def tile_overlays(rgb: np.ndarray, cams: np.ndarray) -> np.ndarray:
    """One heat-map overlay per class, side by side; no class -> the image itself."""
    if cams.shape[0] == 0:
        return rgb
    return np.concatenate([heatmap_overlay(rgb, c) for c in cams], axis=1)
