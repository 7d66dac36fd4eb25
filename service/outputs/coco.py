"""The `coco` output: COCO annotations of one image (compressed RLE from
`seam.common.encoders`, plus each class's image-level score) and the job's merged coco.json."""
from __future__ import annotations

import json
from collections.abc import Iterable, Sequence

import numpy as np
from seam.service.engine.base import SegmentResult

from seam.common import encoders


def bbox(mask: np.ndarray) -> list[int]:
    """[x, y, width, height] of a mask's pixels ([0, 0, 0, 0] when empty)."""
    ys, xs = np.nonzero(mask)
    if ys.size == 0:
        return [0, 0, 0, 0]
    return [int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)]


def coco_annotations(label: np.ndarray, names: Sequence[str], scores: np.ndarray | None = None,
                     image_id: int | str = 0) -> list[dict]:
    """COCO annotations (category_id = label value = foreground index + 1) with the
    image-level score of each class added."""
    anns = encoders.coco_annotations(label, ["background", *names], image_id)
    if scores is not None:
        for a in anns:
            c = a["category_id"] - 1
            if c < len(scores):
                a["score"] = round(float(scores[c]), 6)
    return anns


def coco_categories(names: Sequence[str]) -> list[dict]:
    return [{"id": i + 1, "name": n, "supercategory": "object"} for i, n in enumerate(names)]


def coco_image_doc(seg: SegmentResult, names: Sequence[str], image_id: str, file_name: str,
                   coco_id: int = 0) -> dict:
    """The per-image COCO record a job writes, with the job's `coco_id` for the image (the id it
    has in the merged coco.json, seam.service.jobs.results.coco_image_ids)."""
    h, w = seg.label.shape
    return {"image": {"id": coco_id, "file_name": file_name, "width": int(w), "height": int(h), "seam_id": image_id},
            "annotations": coco_annotations(seg.label, names, seg.scores, image_id=coco_id)}


def merge_coco(docs: Iterable[dict], description: str, names: Sequence[str]) -> bytes:
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


def coco_rle_decode(rle: dict) -> np.ndarray:
    """Inverse of `seam.common.encoders.coco_rle` (for clients and tests; pycocotools'
    rleFrString + decode)."""
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
