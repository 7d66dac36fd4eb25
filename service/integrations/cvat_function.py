"""A cvat-sdk auto-annotation function (`cvat_sdk.auto_annotation` detection function).

    cvat-cli --server-host https://cvat.example --auth user task auto-annotate 42 \\
        --function-module seam.service.integrations.cvat_function \\
        -p url=str:http://seam:8000 -p api_key=str:$SEAM_KEY [--conv-mask-to-poly] [--conf-threshold 0.5]

Parameters (`-p name=type:value`, all optional): `url` + `api_key` (use a running seam API),
else `models_dir` (load the ONNX models in-process, torch-free; default `models`);
`method`, `threshold` (background threshold), `labels_file` (JSON `{frame name or stem:
[class names]}`: image-level labels; frames not listed are predicted), `min_area` (polygons).

Each class present becomes one `mask` shape in cvat-sdk's encoding (`cvat_sdk.masks`), or,
when CVAT asks for polygons (`conv_mask_to_poly`), one polygon per connected component.
Classes whose image-level score is below `conf_threshold` are dropped.
"""
from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path, PurePosixPath

import cvat_sdk.auto_annotation as cvataa
import numpy as np
import PIL.Image

from seam.common.labelling import cvat_mask_points, mask_polygons

# rgb, labels -> (label map, classes present, image-level scores per class)
Segmenter = Callable[[np.ndarray, "list[int] | None"], tuple[np.ndarray, list[int], np.ndarray]]


class SeamFunction:
    """The detection function over any segmenter (an engine in-process or the HTTP API)."""

    def __init__(self, segmenter: Segmenter, classes: Sequence[str],
                 labels_by_frame: dict[str, list[int]] | None = None, min_area: int = 4) -> None:
        self._segment = segmenter
        self.classes = list(classes)
        self.labels_by_frame = labels_by_frame or {}
        self.min_area = min_area
        self.spec = cvataa.DetectionFunctionSpec(
            labels=[cvataa.label_spec(name, i, type="mask") for i, name in enumerate(self.classes)])

    def _labels_for(self, frame_name: str) -> list[int] | None:
        p = PurePosixPath(frame_name.replace("\\", "/"))
        for key in (frame_name, p.name, str(p.with_suffix("")), p.stem):
            if key in self.labels_by_frame:
                return self.labels_by_frame[key]
        return None

    def detect(self, context: cvataa.DetectionFunctionContext, image: PIL.Image.Image) -> list:
        rgb = np.asarray(image.convert("RGB"))
        label, classes, scores = self._segment(rgb, self._labels_for(context.frame_name))
        thr = context.conf_threshold
        shapes = []
        for c in classes:
            mask = label == c + 1
            if not mask.any():
                continue
            if thr is not None and c < len(scores) and float(scores[c]) < thr:
                continue
            if context.conv_mask_to_poly:
                for poly in mask_polygons(mask, min_area=self.min_area):
                    if len(poly) >= 3:
                        shapes.append(cvataa.polygon(c, [float(v) for v in poly.ravel()]))
            else:
                shapes.append(cvataa.mask(c, cvat_mask_points(mask)))
        return shapes


def engine_segmenter(engine, method: str | None = None, threshold: float | None = None) -> Segmenter:
    def run(rgb: np.ndarray, labels: list[int] | None):
        seg = engine.segment(rgb, labels, method=method, threshold=threshold)
        return seg.label, list(seg.classes), np.asarray(seg.scores)
    return run


def http_segmenter(url: str, api_key: str | None, classes: Sequence[str], method: str | None = None,
                   threshold: float | None = None, timeout_s: float = 120.0) -> Segmenter:
    """POST /segment?format=json to a seam API; masks come back as COCO RLE."""
    import io

    import httpx
    from seam.service.outputs.coco import coco_rle_decode

    endpoint = url.rstrip("/") + "/segment"
    # one client for every frame: kept-alive connections, and its TLS context (~45 ms to build) made once
    client = httpx.Client(headers={"X-API-Key": api_key} if api_key else {}, timeout=timeout_s)

    def run(rgb: np.ndarray, labels: list[int] | None):
        buf = io.BytesIO()
        PIL.Image.fromarray(rgb).save(buf, format="PNG")
        form = {"format": "json"}
        if labels is not None:
            form["labels"] = ",".join(classes[c] for c in labels)
        if method:
            form["method"] = method
        if threshold is not None:
            form["threshold"] = str(threshold)
        r = client.post(endpoint, files={"image": ("frame.png", buf.getvalue(), "image/png")}, data=form)
        if r.status_code != 200:
            raise RuntimeError(f"seam API answered {r.status_code}: {r.text[:500]}")
        doc = r.json()
        label = np.zeros((doc["height"], doc["width"]), np.uint8)
        present = []
        for item in doc["classes"]:
            label[coco_rle_decode(item["rle"])] = item["index"] + 1
            present.append(int(item["index"]))
        scores = np.array([doc["scores"].get(n, 0.0) for n in classes], np.float32)
        return label, present, scores
    return run


def load_frame_labels(path: str, classes: Sequence[str]) -> dict[str, list[int]]:
    from seam.common.classes import resolve_labels

    data = json.loads(Path(path).read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object {{frame name: [class names]}}")
    return {str(k): resolve_labels(v if isinstance(v, list) else [v], classes) for k, v in data.items()}


def create(url: str | None = None, api_key: str | None = None, models_dir: str = "models",
           method: str | None = None, threshold: float | None = None, labels_file: str | None = None,
           min_area: int = 4) -> SeamFunction:
    """The factory cvat-cli calls with the `-p` parameters."""
    if url:
        import httpx

        r = httpx.get(url.rstrip("/") + "/models", headers={"X-API-Key": api_key} if api_key else {}, timeout=30)
        r.raise_for_status()
        classes = list(r.json()["classes"])
        seg = http_segmenter(url, api_key, classes, method, threshold)
    else:
        from seam.service.engine.onnx_engine import OnnxEngine

        engine = OnnxEngine(models_dir)
        classes = engine.foreground_classes()
        seg = engine_segmenter(engine, method, threshold)
    labels = load_frame_labels(labels_file, classes) if labels_file else None
    return SeamFunction(seg, classes, labels, min_area=min_area)
