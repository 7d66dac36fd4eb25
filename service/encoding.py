"""Response and job-output encoders: the shared `seam.common.encoders` (also used by
the CLIs) plus the few service-only helpers (tiles, base64, COCO categories, a job's merged
COCO file)."""
from __future__ import annotations

import base64
import json
from collections.abc import Sequence

import numpy as np

from seam.common import encoders as shared
from seam.common.cam import CamResult

coco_rle = shared.coco_rle
heatmap_overlay = shared.heatmap_overlay
mask_overlay = shared.mask_overlay


def png_label(label: np.ndarray) -> bytes:
    """(H, W) label map -> VOC-palette PNG bytes."""
    return shared.encode_png_label(label)


def png_rgb(rgb: np.ndarray) -> bytes:
    return shared.encode_png_rgb(np.ascontiguousarray(rgb, dtype=np.uint8))


def tile_overlays(rgb: np.ndarray, cams: np.ndarray) -> np.ndarray:
    """One heat-map overlay per class, side by side; no class -> the image itself."""
    if cams.shape[0] == 0:
        return rgb
    return np.concatenate([heatmap_overlay(rgb, c) for c in cams], axis=1)


def bbox(mask: np.ndarray) -> list[int]:
    ys, xs = np.nonzero(mask)
    if ys.size == 0:
        return [0, 0, 0, 0]
    return [int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)]


def coco_annotations(label: np.ndarray, names: Sequence[str], scores: np.ndarray | None = None,
                     image_id: int | str = 0) -> list[dict]:
    """COCO annotations (category_id = label value = foreground index + 1) with the
    image-level score of each class added."""
    anns = shared.coco_annotations(label, ["background", *names], image_id)
    if scores is not None:
        for a in anns:
            c = a["category_id"] - 1
            if c < len(scores):
                a["score"] = round(float(scores[c]), 6)
    return anns


def coco_categories(names: Sequence[str]) -> list[dict]:
    return [{"id": i + 1, "name": n, "supercategory": "object"} for i, n in enumerate(names)]


def cams_npz(res: CamResult, names: Sequence[str], dtype: shared.CamDtype = "float32",
             image_size: tuple[int, int] | None = None) -> bytes:
    """`seam.common.encoders.encode_cams_npz` layout: "classes" (K,), "cams" (K, H, W) C-ordered
    float32 (or float16, or uint8 = value / 255), "class_names" (K,), and "image_size" [h, w]
    when the maps are at the working size; loads with allow_pickle=False."""
    return shared.encode_cams_npz(res.classes, res.cams, dtype, class_names=[names[c] for c in res.classes],
                                  image_size=image_size)


def b64_png(rgb: np.ndarray) -> str:
    return base64.b64encode(png_rgb(rgb)).decode("ascii")


def dumps(obj: object) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def coco_rle_decode(rle: dict) -> np.ndarray:
    """Inverse of coco_rle (for clients and tests; pycocotools' rleFrString + decode)."""
    s, (h, w) = rle["counts"], rle["size"]
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
    flat = np.zeros(h * w, dtype=bool)
    pos, val = 0, False
    for n in counts:
        if val:
            flat[pos:pos + n] = True
        pos += n
        val = not val
    return flat.reshape(w, h).T


def merge_coco(docs: Sequence[dict], description: str, names: Sequence[str]) -> bytes:
    """One COCO document from per-image ones (`{"image": ..., "annotations": [...]}`): image ids as
    the per-image files have them (a file without one, from an older job, gets its rank), annotation
    ids renumbered to be unique."""
    images, annotations = [], []
    for n, doc in enumerate(docs, start=1):
        image_id = doc["image"].get("id") or n
        images.append({**doc["image"], "id": image_id})
        for a in doc["annotations"]:
            annotations.append({**a, "id": len(annotations) + 1, "image_id": image_id})
    return json.dumps({"info": {"description": description}, "images": images,
                       "annotations": annotations, "categories": coco_categories(names)}).encode()

