"""The labelling tools' files (the `labelstudio` and `cvat` outputs, and the live Label Studio
backend's regions): a Label Studio tasks-with-predictions JSON and a CVAT "Segmentation mask
1.1" zip. Label maps: value c + 1 = foreground class c, 0 = background, 255 = ignore."""
from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Iterable, Mapping, Sequence
from typing import Literal
from urllib.parse import quote

import numpy as np
from seam.service.outputs.sources import JobFiles

from seam.common.classes import IGNORE_INDEX
from seam.common.encoders import encode_png_label
from seam.common.labelling import ls_rle_encode, mask_polygons
from seam.common.palette import voc_palette


def ls_regions(label: np.ndarray, names: Sequence[str] | Mapping[int, str], scores: Sequence[float] | None,
               from_name: str, to_name: str, region: Literal["brush", "polygon"] = "brush", min_area: int = 4,
               id_prefix: str = "r", extra: Mapping[str, object] | None = None) -> list[dict]:
    """Label Studio result regions of one label map, one per class (brush) or per component (polygon).

    `names`: the name of each class index to label (a mapping picks and orders the classes);
    `extra`: more fields for every region (e.g. readonly)."""
    h, w = label.shape
    by_index = names if isinstance(names, Mapping) else dict(enumerate(names))
    out: list[dict] = []
    for c, name in by_index.items():
        mask = label == c + 1
        if not mask.any():
            continue
        score = round(float(scores[c]), 6) if scores is not None and c < len(scores) else None
        base = _region_base(from_name, to_name, w, h, score, extra)
        if region == "brush":
            out.append(_brush_region(base, f"{id_prefix}{c}", ls_rle_encode(mask), name))
        else:
            out += _polygon_regions(base, f"{id_prefix}{c}", mask_polygons(mask, min_area=min_area), name, w, h)
    return out


def _region_base(from_name: str, to_name: str, w: int, h: int, score: float | None,
                 extra: Mapping[str, object] | None = None) -> dict:
    return {"from_name": from_name, "to_name": to_name, "original_width": int(w), "original_height": int(h),
            "image_rotation": 0, "score": score, **(extra or {})}


def _brush_region(base: dict, rid: str, rle: list[int], name: str) -> dict:
    return {**base, "id": rid, "type": "brushlabels", "value": {"format": "rle", "rle": rle, "brushlabels": [name]}}


def _polygon_regions(base: dict, rid: str, polygons: Iterable[np.ndarray], name: str, w: int, h: int) -> list[dict]:
    """One region per polygon of (N, 2) pixel corners; Label Studio wants percent of the image size."""
    out = []
    for k, poly in enumerate(polygons):
        pts = [[round(100.0 * x / w, 4), round(100.0 * y / h, 4)] for x, y in np.asarray(poly).reshape(-1, 2).tolist()]
        out.append({**base, "id": f"{rid}_{k}", "type": "polygonlabels",
                    "value": {"points": pts, "polygonlabels": [name], "closed": True}})
    return out


def image_url(prefix: str, rel: str) -> str:
    """`prefix` + the image's path in the job (URL-quoted, slashes kept)."""
    return prefix + quote(rel, safe="/")


def prediction_score(regions: Sequence[dict]) -> float:
    """A prediction's score in Label Studio: the mean of its regions' scores (0 without any)."""
    scores = [r["score"] for r in regions if r.get("score") is not None]
    return round(float(np.mean(scores)), 6) if scores else 0.0


def ls_task(url: str, regions: list[dict], model_version: str, data_key: str = "image") -> dict:
    return {"data": {data_key: url},
            "predictions": [{"model_version": model_version, "score": prediction_score(regions), "result": regions}]}


def ls_tasks_json(tasks: Iterable[dict]) -> bytes:
    return json.dumps(list(tasks), separators=(",", ":")).encode()


# --- CVAT "Segmentation mask 1.1" --------------------------------------------------------------
def cvat_labelmap(names: Sequence[str]) -> bytes:
    """labelmap.txt: background then the classes, each with its VOC palette colour (the colour
    its pixels have in SegmentationClass/)."""
    pal = voc_palette()
    lines = ["# label:color_rgb:parts:actions"]
    for i, n in enumerate(["background", *names]):
        r, g, b = (int(v) for v in pal[i])
        lines.append(f"{n}:{r},{g},{b}::")
    return ("\n".join(lines) + "\n").encode()


def cvat_mask_png(label: np.ndarray, n_classes: int) -> bytes:
    """A SegmentationClass PNG: VOC palette; the 255 ignore band (undeclared in labelmap.txt,
    which CVAT rejects as "Undeclared label") becomes background, as does any value above the
    declared classes."""
    lab = np.asarray(label)
    if lab.ndim != 2:
        raise ValueError(f"label map must be 2-D, got {lab.shape}")
    return encode_png_label(np.where((lab == IGNORE_INDEX) | (lab > n_classes), 0, lab).astype(np.uint8))


def cvat_segmentation_zip(items: Iterable[tuple[str, np.ndarray]], names: Sequence[str]) -> bytes:
    """(image id, label map) pairs -> the zip CVAT imports as "Segmentation mask 1.1"
    (image id = the image's path without extension, as CVAT names frames)."""
    return _segmentation_zip(((iid, cvat_mask_png(label, len(names))) for iid, label in items), names)


def _segmentation_zip(pngs: Iterable[tuple[str, bytes]], names: Sequence[str]) -> bytes:
    """labelmap.txt, SegmentationClass/<image id>.png (stored: PNGs are compressed already) and
    the ImageSets list, from (image id, SegmentationClass PNG) pairs."""
    buf = io.BytesIO()
    ids: list[str] = []
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("labelmap.txt", cvat_labelmap(names))
        for iid, png in pngs:
            zf.writestr(f"SegmentationClass/{iid}.png", png, compress_type=zipfile.ZIP_STORED)
            ids.append(iid)
        zf.writestr("ImageSets/Segmentation/default.txt", "".join(f"{i}\n" for i in ids))
    return buf.getvalue()


# --- job outputs (per image, written by the workers) and their merged files ---------------------
def ls_model_version(model: str, method: str) -> str:
    """The model_version of our predictions, live (/labelstudio/predict) and batch (job exports)
    alike: Label Studio skips tasks that already hold a prediction of the backend's version."""
    return f"seam-wsss:{model}:{method}"


def ls_image_doc(label: np.ndarray, names: Sequence[str], scores: Sequence[float], file_name: str,
                 min_area: int = 4, method: str | None = None) -> bytes:
    """The per-image `labelstudio` job output: brush RLE and polygons (pixel corners) of each
    class, so the tasks file can be assembled at download with either region type; `method`:
    the segmentation method that made it (the tasks' model_version)."""
    h, w = label.shape
    classes = []
    for c in range(len(names)):
        mask = label == c + 1
        if not mask.any():
            continue
        classes.append({"index": c, "name": names[c],
                        "score": round(float(scores[c]), 6) if c < len(scores) else None,
                        "rle": ls_rle_encode(mask),
                        "polygons": [p.ravel().astype(int).tolist() for p in mask_polygons(mask, min_area=min_area)]})
    return json.dumps({"file_name": file_name, "width": int(w), "height": int(h), "method": method,
                       "classes": classes}, separators=(",", ":")).encode()


def ls_task_from_doc(doc: dict, url: str, from_name: str, to_name: str, data_key: str,
                     region: Literal["brush", "polygon"], model_version: str, id_prefix: str = "r",
                     labels: Mapping[int, str] | None = None) -> dict:
    """`labels`: class index -> the project's label value (classes without one are left out);
    None: regions carry the model's class names."""
    w, h = doc["width"], doc["height"]
    regions = []
    for cl in doc["classes"]:
        name = cl["name"] if labels is None else labels.get(cl["index"])
        if name is None:
            continue
        base = _region_base(from_name, to_name, w, h, cl["score"])
        rid = f"{id_prefix}{cl['index']}"
        if region == "brush":
            regions.append(_brush_region(base, rid, cl["rle"], name))
        else:
            regions += _polygon_regions(base, rid, cl["polygons"], name, w, h)
    return ls_task(url, regions, model_version, data_key)


def job_labelstudio_tasks(job: JobFiles, prefix: str, from_name: str = "tag", to_name: str = "image",
                          data_key: str = "image", region: Literal["brush", "polygon"] = "brush",
                          labels: Mapping[int, str] | None = None) -> bytes:
    """labelstudio_tasks.json of a finished job: one task per image with a finished output.
    model_version as the live backend's (`seam-wsss:<model>:<method>`)."""
    models = job.manifest.get("models") or []
    model = (models[0].get("name") or "model") if models else "model"
    asked = job.options.get("method")
    tasks = []
    for n, (iid, rel) in enumerate(sorted(job.manifest["images"].items())):
        try:
            doc = json.loads(job.read("labelstudio", iid) or b"")
        except ValueError:
            continue  # failed or missing image: no task
        # outputs written before the method was recorded: the method asked for, else unknown
        version = ls_model_version(model, doc.get("method") or asked or "unknown")
        tasks.append(ls_task_from_doc(doc, image_url(prefix, rel), from_name, to_name, data_key, region, version,
                                      id_prefix=f"i{n}r", labels=labels))
    return ls_tasks_json(tasks)


def job_cvat_zip(job: JobFiles) -> bytes:
    """The "Segmentation mask 1.1" zip of a finished job, from its per-image `cvat` PNGs (failed
    images have none)."""
    return _segmentation_zip(job.files("cvat"), job.names)
