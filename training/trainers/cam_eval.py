"""Score a trained SEAM as the paper does: multi-scale + flip CAMs of the training images
(given their image-level labels), pseudo labels argmax([alpha, CAMs]), mIoU swept over
alpha = 0.00..0.59 with the best reported, plus m_FN / m_FP (Fig. 6).

Two CAM protocols, as the authors computed each kind:
- PCM maps (SEAM): `infer_SEAM.py` - cam_rv of every pass upsampled and summed, negatives
  clipped, per-class min-max (`seam.common.cam.multiscale_cam`, refined=True).
- raw CAMs (Table 1's baseline and "+ER" rows): psa's `infer_cls.py`, which SEAM's
  baseline inherits - `forward_cam` is relu(fc8(x)) at stride 8 (psa
  network/resnet38_cls.py, `forward_cam`: `x = F.conv2d(x, self.fc8.weight); x = F.relu(x)`),
  each pass upsampled straight to the image size (bilinear, align_corners=False) and
  multiplied by the labels, flips undone, the passes summed, then divided by the per-class
  max: `norm_cam = sum_cam / (np.max(sum_cam, (1, 2), keepdims=True) + 1e-5)` (infer_cls.py,
  the `_work` function and the two lines after `pop_results`). No minimum is subtracted and
  the relu comes before the sum - unlike the PCM path, where clipping follows the sum.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from seam.training.data.label_png import read_label_png
from seam.training.evaluation.evaluate import evaluate
from seam.training.inference.cam import torch_runner

from seam.common.cam import DEFAULT_SCALES, MultiScaleConfig, multiscale_cam, resize_matrices
from seam.common.image import Normalization, load_rgb, resize_rgb, scaled_size
from seam.common.metrics import ConfusionMeter

EPS = 1e-5
_DEFAULT_NORMALIZATION = Normalization()


def release_raw_cam(rgb: np.ndarray, runner: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]],
                    labels: Sequence[int], scales: Sequence[float] = DEFAULT_SCALES,
                    normalization: Normalization = _DEFAULT_NORMALIZATION) -> dict[int, np.ndarray]:
    """Raw multi-scale + flip CAMs of one (H, W, 3) uint8 image as psa's infer_cls.py computes
    them (module docstring): {fg class: (H, W) float32 in [0, 1]} for the given classes.
    `runner` returns (cam8, _) with cam8 (B, C, h8, w8), channel 0 background."""
    H, W = rgb.shape[:2]
    classes = sorted(int(c) for c in labels)
    total = np.zeros((len(classes), H, W), np.float32)
    if not classes:
        return {}
    for s in scales:
        x = normalization(resize_rgb(rgb, scaled_size((H, W), s)))  # (3, h, w)
        cam8, _ = runner(np.ascontiguousarray(np.stack([x, x[:, :, ::-1]])))
        fg = np.maximum(cam8[:, 1:][:, classes].astype(np.float32), 0)  # relu per pass (forward_cam)
        ry, rx = resize_matrices(cam8.shape[-2:], [((H, W), False)])
        up = np.einsum("Hh,bchw,Ww->bcHW", ry, fg, rx, optimize=True)
        total += up[0] + up[1][:, :, ::-1]
    norm = total / (total.max(axis=(-2, -1), keepdims=True) + EPS)
    return {c: norm[i].astype(np.float32) for i, c in enumerate(classes)}


def write_cams(model: torch.nn.Module, items: Sequence[tuple[str, Path, list[int]]], cam_dir: Path,
               scales: Sequence[float] = DEFAULT_SCALES, refined: bool = True, device: str | torch.device = "cpu",
               on_image: Callable[[str], None] | None = None) -> None:
    """<cam_dir>/<id>.npy in the authors' format for each (id, image, fg labels): PCM maps as
    infer_SEAM.py (refined=True), raw CAMs as psa's infer_cls.py (refined=False)."""
    cam_dir.mkdir(parents=True, exist_ok=True)
    runner = torch_runner(model, device, refined=refined)
    cfg = MultiScaleConfig(scales=tuple(scales), flip=True, refined=refined)
    for image_id, path, labels in items:
        if refined:
            cams = multiscale_cam(load_rgb(path), runner, labels, cfg).as_dict()
        else:
            cams = release_raw_cam(load_rgb(path), runner, labels, scales)
        np.save(cam_dir / f"{image_id}.npy", cams)
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
    res["cam_protocol"] = "infer_SEAM (PCM, min-max)" if refined else "psa infer_cls (relu per pass, max)"
    return res
