"""Score a trained SEAM as the paper does: multi-scale + flip CAMs of the training images
(given their image-level labels), pseudo labels argmax([alpha, CAMs]), mIoU swept over
alpha = 0.00..0.59 with the best reported, plus m_FN / m_FP (Fig. 6)."""
from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from seam.common.cam import DEFAULT_SCALES, MultiScaleConfig, multiscale_cam
from seam.common.image import load_rgb
from seam.common.metrics import ConfusionMeter
from training.evaluation.evaluate import evaluate, read_label_png
from training.inference.cam import torch_runner


def write_cams(model: torch.nn.Module, items: Sequence[tuple[str, Path, list[int]]], cam_dir: Path,
               scales: Sequence[float] = DEFAULT_SCALES, refined: bool = True, device: str | torch.device = "cpu",
               on_image: Callable[[str], None] | None = None) -> None:
    """<cam_dir>/<id>.npy in the authors' format for each (id, image, fg labels)."""
    cam_dir.mkdir(parents=True, exist_ok=True)
    runner = torch_runner(model, device)
    cfg = MultiScaleConfig(scales=tuple(scales), flip=True, refined=refined)
    for image_id, path, labels in items:
        res = multiscale_cam(load_rgb(path), runner, labels, cfg)
        np.save(cam_dir / f"{image_id}.npy", res.as_dict())
        if on_image is not None:
            on_image(image_id)


def all_background_miou(gt_dir: Path, ids: Sequence[str], class_names: Sequence[str]) -> float:
    """mIoU (%) of predicting background everywhere: the floor a CAM must beat."""
    meter = ConfusionMeter(len(class_names))
    for i in ids:
        gt = read_label_png(gt_dir / f"{i}.png")
        meter.update(np.zeros_like(gt), gt)
    return float(meter.scores(class_names)["miou"])


def score_cams(model: torch.nn.Module, items: Sequence[tuple[str, Path, list[int]]], gt_dir: Path,
               class_names: Sequence[str], cam_dir: Path, scales: Sequence[float] = DEFAULT_SCALES,
               refined: bool = True, device: str | torch.device = "cpu",
               on_image: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Write CAMs and evaluate them with the threshold sweep. Returns evaluate()'s dict
    (miou, per_class, mfn, mfp, best_threshold, curve, ...) plus all_background_miou,
    scales and refined."""
    write_cams(model, items, cam_dir, scales, refined, device, on_image)
    ids = [i for i, _, _ in items]
    res = evaluate(cam_dir, gt_dir, ids, kind="npy", curve=True, class_names=list(class_names), progress=False)
    res["all_background_miou"] = all_background_miou(gt_dir, ids, class_names)
    res["scales"] = list(scales)
    res["refined"] = refined
    return res
