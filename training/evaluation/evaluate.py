"""Evaluate label PNGs or CAM files against VOC-style ground truth (torch-free).

Mirrors the authors' `evaluation.py`: one confusion matrix over all images, GT 255
ignored, IoU per class, mIoU over all classes; for CAM files the background score
is a fixed threshold, optionally swept over 0.00..0.59.
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from seam.training.data.label_png import read_label_png

from seam.common.cam import DEFAULT_BG_THRESHOLD, cams_to_label
from seam.common.classes import IGNORE_INDEX, VOC_CLASSES
from seam.common.metrics import ConfusionMeter, scores_from_confusion

CURVE_THRESHOLDS: tuple[float, ...] = tuple(i / 100 for i in range(60))  # the authors' --curve sweep
CAM_SUFFIXES = (".npy", ".npz")
T = TypeVar("T")


def find_cam_file(cam_dir: str | Path, image_id: str) -> Path | None:
    """`<cam_dir>/<id>.npz` (seam cam's default, no pickle), else `<id>.npy` (the authors' format,
    `seam cam --authors-npy`); None when neither exists."""
    for suffix in (".npz", ".npy"):
        path = Path(cam_dir) / f"{image_id}{suffix}"
        if path.is_file():
            return path
    return None


def load_cams(path: str | Path) -> tuple[list[int], np.ndarray]:
    """(foreground classes, (K, H, W) float32 CAMs) from `<id>.npy` or `<id>.npz`.

    `.npy` is the authors' format, a pickled dict {fg class: HxW}. Unpickling runs
    code, so this is only for files we wrote ourselves (`seam cam`), never for
    uploads. `.npz` holds plain arrays "classes" and "cams" and needs no pickle.
    """
    path = Path(path)
    try:
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as z:
                if "classes" not in z or "cams" not in z:
                    raise ValueError(f"{path}: .npz CAM file needs arrays 'classes' and 'cams'")
                classes = [int(c) for c in np.asarray(z["classes"]).reshape(-1)]
                cams = np.asarray(z["cams"], dtype=np.float32)
        else:
            obj = np.load(path, allow_pickle=True)  # our own seam cam output, see docstring
            table = obj.item() if obj.dtype == object and obj.shape == () else None
            if not isinstance(table, dict):
                raise ValueError(f"{path}: expected a dict {{class index: HxW CAM}} saved with np.save")
            classes = sorted(int(k) for k in table)
            cams = (np.stack([np.asarray(table[k], dtype=np.float32) for k in sorted(table, key=int)])
                    if table else np.zeros((0, 0, 0), np.float32))
    except (OSError, EOFError) as exc:
        raise ValueError(f"{path}: cannot read CAM file ({exc})") from exc
    if cams.ndim != 3 or cams.shape[0] != len(classes):
        raise ValueError(f"{path}: {len(classes)} classes but CAM array of shape {cams.shape}")
    return classes, cams


def detect_prediction_kind(pred_dir: str | Path) -> str:
    """'png' or 'npy' from the files present; ValueError when both or neither are there."""
    pred_dir = Path(pred_dir)
    has_png = any(pred_dir.glob("*.png"))
    has_cam = any(p.suffix in CAM_SUFFIXES for p in pred_dir.iterdir() if p.is_file())
    if has_png and has_cam:
        raise ValueError(f"{pred_dir} holds both label PNGs and CAM files; choose one with kind 'png' or 'npy'")
    if not (has_png or has_cam):
        raise FileNotFoundError(f"no .png, .npy or .npz predictions in {pred_dir}")
    return "png" if has_png else "npy"


def sweep_confusions(
    gt: np.ndarray, cams: np.ndarray, classes: Sequence[int], thresholds: Sequence[float], num_classes: int,
    ignore_index: int = IGNORE_INDEX,
) -> np.ndarray:
    """(len(thresholds), C, C) confusion matrices of `cams_to_label` at every threshold, in one pass.

    With m = max CAM and a = its argmax, `cams_to_label` gives background where the
    float32 threshold t >= m (np.argmax keeps the first of tied maxima) and class a
    otherwise. So a pixel is foreground exactly for the k thresholds below m
    (thresholds sorted): one bincount over (k, gt, a) plus cumulative sums gives
    every matrix without building a label map per threshold.
    """
    thr = np.asarray(thresholds, dtype=np.float32)
    if np.any(np.diff(thr) < 0):
        raise ValueError("thresholds must be sorted ascending")
    n_t, c = len(thr), num_classes
    valid = gt != ignore_index
    g = gt[valid].astype(np.int64)
    if g.size and g.max() >= c:
        raise ValueError(f"ground truth holds label {int(g.max())}, outside 0..{c - 1}")
    if len(classes) == 0:
        conf = np.bincount(g * c, minlength=c * c).reshape(c, c)
        return np.broadcast_to(conf, (n_t, c, c)).astype(np.int64)
    lut = np.asarray([cl + 1 for cl in classes], dtype=np.int64)
    if lut.max() >= c or lut.min() < 1:
        raise ValueError(f"CAM class indices {list(classes)} outside foreground range 0..{c - 2}")
    cams = cams.astype(np.float32, copy=False)
    m = cams.max(axis=0)[valid]
    a = lut[cams.argmax(axis=0)[valid]]
    k = np.searchsorted(thr, m, side="left")  # number of thresholds strictly below m
    # fg[k, g, a]: pixels that are class a for thresholds 0..k-1
    fg = np.bincount((k * c + g) * c + a, minlength=(n_t + 1) * c * c).reshape(n_t + 1, c, c)
    # bg[k, g]: pixels that are background for thresholds k..n_t-1
    bg = np.bincount(k * c + g, minlength=(n_t + 1) * c).reshape(n_t + 1, c)
    conf = np.zeros((n_t, c, c), dtype=np.int64)
    conf += np.cumsum(fg[::-1], axis=0)[::-1][1:]  # threshold i counts fg pixels with k > i
    conf[:, :, 0] += np.cumsum(bg, axis=0)[:n_t]  # and bg pixels with k <= i
    return conf


def _progress(items: Iterable[T], total: int, enabled: bool, description: str) -> Iterator[T]:
    if not enabled:
        yield from items
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeRemainingColumn(), console=Console(stderr=True)) as bar:
        task = bar.add_task(description, total=total)
        for item in items:
            yield item
            bar.advance(task)


def _match_ids(
    pred_dir: Path, gt_dir: Path, ids: Sequence[str] | None, suffixes: Sequence[str]
) -> list[tuple[str, Path]]:
    def pred_path(i: str) -> Path | None:
        return next((pred_dir / f"{i}{s}" for s in suffixes if (pred_dir / f"{i}{s}").is_file()), None)

    if ids is None:
        gt_ids = sorted(p.stem for p in gt_dir.glob("*.png"))
        if not gt_ids:
            raise FileNotFoundError(f"no ground-truth .png files in {gt_dir}")
        pairs = [(i, pred_path(i)) for i in gt_ids]
        found = [(i, p) for i, p in pairs if p is not None]
        if not found:
            raise FileNotFoundError(
                f"none of the {len(gt_ids)} ground-truth images in {gt_dir} has a prediction "
                f"({'/'.join(suffixes)}) in {pred_dir}")
        return found
    ids = [str(i) for i in ids]
    if not ids:
        raise ValueError("the image id list is empty")
    pairs = [(i, pred_path(i)) for i in ids]
    missing = [i for i, p in pairs if p is None]
    if missing:
        raise FileNotFoundError(
            f"{len(missing)} listed images have no prediction ({'/'.join(suffixes)}) in {pred_dir}: {_few(missing)}")
    no_gt = [i for i in ids if not (gt_dir / f"{i}.png").is_file()]
    if no_gt:
        raise FileNotFoundError(f"{len(no_gt)} listed images have no ground truth in {gt_dir}: {_few(no_gt)}")
    return [(i, p) for i, p in pairs if p is not None]


def _few(items: Sequence[str], n: int = 5) -> str:
    return ", ".join(items[:n]) + (f", ... (+{len(items) - n} more)" if len(items) > n else "")


def _check_arguments(pred_dir: Path, gt_dir: Path, kind: str | None, threshold: float | None, curve: bool,
                     class_names: Sequence[str]) -> str:
    """`evaluate`'s arguments checked before any file is read; returns the prediction kind (png | npy)."""
    for what, d in (("prediction", pred_dir), ("ground-truth", gt_dir)):
        if not d.is_dir():
            raise FileNotFoundError(f"{what} directory not found: {d}")
    if kind is None:
        kind = detect_prediction_kind(pred_dir)
    if kind not in ("png", "npy", "npz"):
        raise ValueError(f"kind must be 'png' or 'npy', got {kind!r}")
    kind = "npy" if kind == "npz" else kind
    if kind == "png" and (curve or threshold is not None):
        raise ValueError("a threshold or curve needs CAM files (kind 'npy'); label PNGs are already thresholded")
    if curve and threshold is not None:
        raise ValueError("give either a threshold or a curve sweep, not both")
    if threshold is not None and not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must be within 0..1, got {threshold}")
    if len(class_names) < 2:
        raise ValueError("need at least two class names (background first)")
    return kind


def _confusions(pairs: Sequence[tuple[str, Path]], gt_dir: Path, kind: str, thresholds: tuple[float, ...],
                curve: bool, num_classes: int, progress: bool) -> np.ndarray:
    """One confusion matrix over all images per threshold (one threshold unless `curve`)."""
    meter = ConfusionMeter(num_classes)
    sweep = np.zeros((len(thresholds), num_classes, num_classes), dtype=np.int64)
    for image_id, path in _progress(pairs, len(pairs), progress, "evaluating"):
        gt = read_label_png(gt_dir / f"{image_id}.png")
        try:
            if kind == "png":
                meter.update(read_label_png(path), gt)
                continue
            classes, cams = load_cams(path)
            if classes and cams.shape[1:] != gt.shape:
                raise ValueError(f"CAM size {cams.shape[1:]} differs from ground truth {gt.shape}")
            if curve:
                sweep += sweep_confusions(gt, cams, classes, thresholds, num_classes)
            else:
                meter.update(cams_to_label(cams, classes, thresholds[0]) if classes else np.zeros_like(gt), gt)
        except ValueError as exc:
            raise ValueError(f"{image_id}: {exc}") from exc
    return sweep if curve else meter.matrix[None]


def evaluate(
    pred_dir: str | Path,
    gt_dir: str | Path,
    ids: Sequence[str] | None = None,
    kind: str | None = None,
    threshold: float | None = None,
    curve: bool = False,
    class_names: Sequence[str] = VOC_CLASSES,
    progress: bool = True,
) -> dict[str, Any]:
    """Score predictions in `pred_dir` against `<gt_dir>/<id>.png`.

    kind: 'png' (label maps), 'npy' (CAM files `<id>.npy` or `<id>.npz`), None = detect.
    threshold: background score for CAMs (default 0.26); curve: sweep 0.00..0.59
    and report the best. ids: None = every GT image that has a prediction.
    Returns {"miou", "per_class", "mfn", "mfp", "pixel_acc", "threshold",
    "num_images", "kind"} plus "best_threshold" and "curve" when sweeping.
    """
    pred_dir, gt_dir = Path(pred_dir), Path(gt_dir)
    kind = _check_arguments(pred_dir, gt_dir, kind, threshold, curve, class_names)
    pairs = _match_ids(pred_dir, gt_dir, ids, (".png",) if kind == "png" else CAM_SUFFIXES)
    thresholds: tuple[float, ...] = CURVE_THRESHOLDS if curve else (
        DEFAULT_BG_THRESHOLD if threshold is None else float(threshold),)
    confusions = _confusions(pairs, gt_dir, kind, thresholds, curve, len(class_names), progress)
    if curve:
        points = [scores_from_confusion(conf, class_names) for conf in confusions]
        best = max(range(len(points)), key=lambda i: points[i]["miou"])  # first best on ties
        result = dict(points[best])
        result["best_threshold"] = thresholds[best]
        result["threshold"] = thresholds[best]
        result["curve"] = [
            {"threshold": t, "miou": p["miou"], "mfn": p["mfn"], "mfp": p["mfp"]}
            for t, p in zip(thresholds, points, strict=True)
        ]
    else:
        result = scores_from_confusion(confusions[0], class_names)
        result["threshold"] = thresholds[0] if kind == "npy" else None
    result["num_images"] = len(pairs)
    result["kind"] = kind
    return result


def plot_curve(result: dict[str, Any], out_png: str | Path) -> Path:
    """mIoU, m_FN and m_FP against the background threshold, saved as a PNG."""
    if not result.get("curve"):
        raise ValueError("the result has no curve; evaluate CAM files with curve=True")
    try:
        import matplotlib

        matplotlib.use("Agg")  # no display on servers
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise RuntimeError("plotting needs matplotlib: pip install matplotlib") from exc
    pts = result["curve"]
    t = [p["threshold"] for p in pts]
    nan = float("nan")
    fig, ax = plt.subplots(figsize=(7, 4), dpi=120)
    ax.plot(t, [p["miou"] for p in pts], color="tab:blue", label="mIoU (%)")
    ax.axvline(result["best_threshold"], color="tab:blue", ls=":", lw=1)
    ax.set_xlabel("background threshold")
    ax.set_ylabel("mIoU (%)")
    ax2 = ax.twinx()
    ax2.plot(t, [nan if p["mfn"] is None else p["mfn"] for p in pts], color="tab:red", label="m_FN")
    ax2.plot(t, [nan if p["mfp"] is None else p["mfp"] for p in pts], color="tab:green", label="m_FP")
    ax2.set_ylabel("m_FN, m_FP")
    lines = ax.get_lines()[:1] + ax2.get_lines()
    ax.legend(lines, [ln.get_label() for ln in lines], loc="best")
    ax.set_title(f"best {result['best_threshold']:.2f}: mIoU {result['miou']:.2f}%")
    fig.tight_layout()
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png)
    plt.close(fig)
    return out_png
