"""Turning engine results into response bodies and job output files (used by the API
routes and by the chunk-processing task alike)."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from seam.service import encoding as enc
from seam.service.engine.base import SegmentResult

from seam.common.cam import DEFAULT_BG_THRESHOLD, CamResult


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
            "area": int(mask.sum()), "bbox": enc.bbox(mask), "rle": enc.coco_rle(mask),
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
            "overlay_png": enc.b64_png(enc.heatmap_overlay(rgb, m)),
        })
    return {"width": int(w), "height": int(h), "refined": refined, "threshold": thr, "classes": stats,
            "scores": score_table(res.scores, names)}


def coco_image_doc(seg: SegmentResult, names: Sequence[str], image_id: str, file_name: str,
                   coco_id: int = 0) -> dict:
    """The per-image COCO record a job writes, with the job's `coco_id` for the image (the id it
    has in the merged coco.json, seam.service.jobs.results.coco_image_ids)."""
    h, w = seg.label.shape
    return {"image": {"id": coco_id, "file_name": file_name, "width": int(w), "height": int(h), "seam_id": image_id},
            "annotations": enc.coco_annotations(seg.label, names, seg.scores, image_id=coco_id)}


def job_outputs(engine, rgb: np.ndarray, seg: SegmentResult, labels: list[int] | None, kinds: Sequence[str],
                names: Sequence[str], image_id: str, file_name: str, coco_id: int = 0) -> dict[str, bytes]:
    """Every requested output of one segmented image, as bytes keyed by output kind."""
    out: dict[str, bytes] = {}
    if "png" in kinds:
        out["png"] = enc.png_label(seg.label)
    if "overlay" in kinds:
        out["overlay"] = enc.png_rgb(enc.mask_overlay(rgb, seg.label))
    if "coco" in kinds:
        out["coco"] = enc.dumps(coco_image_doc(seg, names, image_id, file_name, coco_id))
    if "npz" in kinds:
        cams = seg.cams
        if cams is None:
            cams = engine.cam(rgb, labels if labels is not None else seg.classes, refined=seg.method != "cam")
        elif hasattr(cams, "at_size"):  # the engine keeps a segmentation's maps at its working size
            cams = cams.at_size(rgb.shape[:2])
        out["npz"] = enc.cams_npz(cams, names)
    if "labelstudio" in kinds or "cvat" in kinds:  # pre-annotation files for the labelling tools
        from seam.service.integrations import exports

        if "labelstudio" in kinds:
            out["labelstudio"] = exports.ls_image_doc(seg.label, names, seg.scores, file_name, method=seg.method)
        if "cvat" in kinds:
            out["cvat"] = exports.cvat_mask_png(seg.label, len(names))
    return out


def model_refs(engine) -> list[dict]:
    """Name, kind and ONNX sha256 of each loaded model: recorded with a job at submission."""
    return [{"name": m.name, "kind": m.kind, "sha256": (m.manifest.get("onnx") or {}).get("sha256")}
            for m in engine.models()]
