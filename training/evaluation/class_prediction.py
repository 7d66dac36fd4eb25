"""How a SEAM model does without labels, as the web page uses it: predicted classes
(sigmoid of the GAP score >= cls_threshold, averaged over the multi-scale passes) and the
mask argmax([bg_threshold, CAMs of the predicted classes]).

    seam class-prediction --checkpoint runs/demo-v2/seam_final.pth \\
        --data /tmp/synth_fresh --list ImageSets/Segmentation/train.txt --tune-data /tmp/synth --tune-list val.txt

Per image the CAMs of every class are computed once (the normalisation is per class, so a
subset's maps do not depend on which other classes are in it); thresholds are then swept
without rerunning the network. `--tune-*`: choose cls_threshold on another image set
(one the model did not train on), then report on `--data` at that threshold.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from seam.common.cam import DEFAULT_BG_THRESHOLD, DEFAULT_CLS_THRESHOLD, DEFAULT_SCALES, cams_to_label
from seam.common.metrics import ConfusionMeter
from seam.common.options import parse_floats, setting

CLS_GRID = tuple(round(0.05 * i, 2) for i in range(1, 20))  # 0.05 .. 0.95


@dataclass
class ImageResult:
    true: set[int]  # foreground indices present in the ground truth
    scores: np.ndarray  # (num_fg,) class scores
    cams: np.ndarray  # (num_fg, H, W) every class's normalised CAM
    gt: np.ndarray  # (H, W) label map


def load_seam(checkpoint: str | Path) -> tuple[Any, int, list[str]]:
    """(SEAM network, number of foreground classes, class names) of a checkpoint."""
    from seam.training.models.registry import DEFAULT_NUM_CLASSES, model_from_checkpoint

    model, meta = model_from_checkpoint(checkpoint, "seam")
    num_fg = int(meta.get("num_classes", DEFAULT_NUM_CLASSES)) - 1
    names = list(meta.get("class_names") or ["background", *(f"class{c}" for c in range(num_fg))])
    return model, num_fg, names


def run_images(model: Any, num_fg: int, root: Path, ids: Sequence[str], scales: Sequence[float] = DEFAULT_SCALES,
               device: str = "cpu") -> list[ImageResult]:
    """Multi-scale + flip PCM CAMs of all `num_fg` classes for each image (`model` from `load_seam`)."""
    from seam.training.data.label_png import read_label_png
    from seam.training.inference.cam import torch_runner

    from seam.common.cam import MultiScaleConfig, multiscale_cam
    from seam.common.image import load_rgb

    runner = torch_runner(model, device)
    cfg = MultiScaleConfig(scales=tuple(scales), flip=True, refined=True)
    out = []
    for i in ids:
        gt = read_label_png(root / "SegmentationClass" / f"{i}.png")
        res = multiscale_cam(load_rgb(root / "JPEGImages" / f"{i}.jpg"), runner, list(range(num_fg)), cfg)
        true = {int(c) - 1 for c in np.unique(gt) if 0 < c < 255}
        out.append(ImageResult(true, res.scores, res.cams, gt))
    return out


def score(results: Sequence[ImageResult], class_names: Sequence[str], cls_threshold: float,
          bg_threshold: float = DEFAULT_BG_THRESHOLD) -> dict[str, Any]:
    """Micro precision / recall of the predicted classes, images with no class found, and the
    mIoU of the masks built from the predicted classes only."""
    tp = fp = fn = 0
    none_found = 0
    meter = ConfusionMeter(len(class_names))
    for r in results:
        pred = {int(c) for c in np.flatnonzero(r.scores >= cls_threshold)}
        tp += len(pred & r.true)
        fp += len(pred - r.true)
        fn += len(r.true - pred)
        none_found += not pred
        classes = sorted(pred)
        label = cams_to_label(r.cams[classes], classes, bg_threshold)
        meter.update(label, r.gt)
    s = meter.scores(class_names)
    return {"cls_threshold": cls_threshold, "bg_threshold": bg_threshold,
            "precision": tp / max(tp + fp, 1), "recall": tp / max(tp + fn, 1),
            "tp": tp, "fp": fp, "fn": fn, "images": len(results), "no_class_found": none_found,
            "miou": float(s["miou"])}


def choose_threshold(results: Sequence[ImageResult], class_names: Sequence[str], grid: Sequence[float] = CLS_GRID,
                     bg_threshold: float = DEFAULT_BG_THRESHOLD) -> tuple[float, list[dict[str, Any]]]:
    """The grid value with the best min(precision, recall) (ties: higher mIoU)."""
    rows = [score(results, class_names, t, bg_threshold) for t in grid]
    best = max(rows, key=lambda r: (min(r["precision"], r["recall"]), r["miou"]))
    return best["cls_threshold"], rows


def _ids(root: Path, list_file: str) -> list[str]:
    p = Path(list_file)
    if not p.is_absolute() and not p.is_file():
        p = root / list_file
        if not p.is_file():
            p = root / "ImageSets" / "Segmentation" / list_file
    return p.read_text().split()


@dataclass
class ClassPredictionConfig:
    checkpoint: str = setting(path=True, help="SEAM checkpoint (ours or the authors' state dict).")
    data: str = setting(path=True, help="A `seam synth` / VOC-layout root with SegmentationClass/: the images "
                                        "reported on.")
    list_file: str = setting("ImageSets/Segmentation/train.txt", flag="--list", help=(
        "Image ids of --data: a list file, or its name under the root or ImageSets/Segmentation/."))
    tune_data: str | None = setting(None, path=True, help=(
        "Choose cls_threshold on this image set first (one the model did not train on), then report on --data "
        "at that threshold."))
    tune_list: str = setting("val.txt", help="Image ids of --tune-data, as --list.")
    cls_threshold: float | None = setting(None, min=0.0, max=1.0, help=(
        f"Report at this class threshold (default: the one tuned on --tune-data, else {DEFAULT_CLS_THRESHOLD})."))
    bg_threshold: float = setting(DEFAULT_BG_THRESHOLD, help="Background score of the masks.")
    scales: tuple[float, ...] = setting(DEFAULT_SCALES, parse=parse_floats, help="CAM scales (multi-scale + flip).")


def class_prediction_report(cfg: ClassPredictionConfig) -> dict[str, Any]:
    """Scores at the default and the chosen class threshold (and the whole grid) on `cfg.data`;
    with `tune_data` and no `cls_threshold`, the threshold is chosen there first."""
    report: dict[str, Any] = {"checkpoint": str(cfg.checkpoint), "scales": list(cfg.scales)}
    threshold = cfg.cls_threshold if cfg.cls_threshold is not None else DEFAULT_CLS_THRESHOLD
    model, num_fg, names = load_seam(cfg.checkpoint)  # once, for the tuning and the test images
    if cfg.tune_data is not None and cfg.cls_threshold is None:
        tune_root = Path(cfg.tune_data)
        tune = run_images(model, num_fg, tune_root, _ids(tune_root, cfg.tune_list), cfg.scales)
        threshold, rows = choose_threshold(tune, names, bg_threshold=cfg.bg_threshold)
        report["tuning"] = {"data": str(cfg.tune_data), "list": cfg.tune_list, "chosen": threshold, "grid": rows}
    test = run_images(model, num_fg, Path(cfg.data), _ids(Path(cfg.data), cfg.list_file), cfg.scales)
    report["class_names"] = names
    report["default"] = score(test, names, DEFAULT_CLS_THRESHOLD, cfg.bg_threshold)
    report["chosen"] = score(test, names, threshold, cfg.bg_threshold)
    report["grid"] = [score(test, names, t, cfg.bg_threshold) for t in CLS_GRID]
    return report
