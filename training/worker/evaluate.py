"""A version scored on the held-out split through its ONNX graphs (what the service serves, not
the torch weights), mIoU against the ground-truth PNGs: its DeepLab when it has one (logits at
scale 1 with flip, argmax), else its SEAM CAMs given each image's tags (scale 1 with flip, the
manifest's background threshold). The new version and the promoted one are scored on the same
images, each by the best segmentation it serves, so their numbers compare."""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
from seam.training.data.label_png import read_label_png

from seam.common.cam import MultiScaleConfig, cams_to_label, multiscale_cam, resize_bilinear
from seam.common.image import Normalization, load_rgb
from seam.common.metrics import ConfusionMeter
from seam.modelrepo.manifest import read_manifest
from seam.modelrepo.pcm import run_pcm
from seam.modelrepo.runtime import cpu_session

HeldOut = Sequence[tuple[str, Path, Path, list[int]]]  # id, image, ground truth, foreground tags


def _runner(model_dir: Path) -> Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]:
    mf = read_manifest(model_dir)
    sess = cpu_session(model_dir / mf.onnx.file)
    pcm = cpu_session(model_dir / mf.pcm.file) if mf.pcm is not None else None

    def run(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        cam, pcm_n, pcm_g = sess.run(None, {mf.input.name: x.astype(np.float32, copy=False)})
        rv = run_pcm(pcm, pcm_n, pcm_g) if pcm is not None else cam
        return cam, rv

    return run


def evaluate_seam(model_dir: Path, items: HeldOut, class_names: Sequence[str]) -> float:
    """mIoU (%) of the SEAM model in `model_dir` on `items` (class names must be the model's)."""
    mf = read_manifest(model_dir)
    if list(mf.class_names) != list(class_names):
        raise ValueError(f"{model_dir}: classes {list(mf.class_names[1:])} differ from {list(class_names[1:])}")
    assert mf.cam is not None
    run = _runner(model_dir)
    cfg = MultiScaleConfig(scales=(1.0,), flip=True, refined=mf.cam.refined,
                           normalization=Normalization(tuple(mf.input.mean), tuple(mf.input.std)))
    meter = ConfusionMeter(len(class_names))
    for _id, image, gt_path, tags in items:
        rgb = load_rgb(image)
        res = multiscale_cam(rgb, run, tags, cfg)
        pred = cams_to_label(res.cams, res.classes, mf.cam.bg_threshold)
        gt = read_label_png(gt_path)
        if gt.shape != pred.shape:
            raise ValueError(f"{gt_path}: ground truth {gt.shape} differs from the image {pred.shape}")
        meter.update(pred, gt)
    return float(meter.scores(class_names)["miou"])


def _check_classes(model_dir: Path, class_names: Sequence[str]) -> None:
    mf = read_manifest(model_dir)
    if list(mf.class_names) != list(class_names):
        raise ValueError(f"{model_dir}: classes {list(mf.class_names[1:])} differ from {list(class_names[1:])}")


def evaluate_deeplab(model_dir: Path, items: HeldOut, class_names: Sequence[str]) -> float:
    """mIoU (%) of the DeepLab model in `model_dir` on `items`."""
    _check_classes(model_dir, class_names)
    mf = read_manifest(model_dir)
    sess = cpu_session(model_dir / mf.onnx.file)
    norm = Normalization(tuple(mf.input.mean), tuple(mf.input.std))
    meter = ConfusionMeter(len(class_names))
    for _id, image, gt_path, _tags in items:
        rgb = load_rgb(image)
        x = norm(rgb)
        logits = sess.run(None, {mf.input.name: np.stack([x, x[:, :, ::-1]]).astype(np.float32)})[0]
        up = resize_bilinear(logits[0], rgb.shape[:2]) + resize_bilinear(logits[1], rgb.shape[:2])[:, :, ::-1]
        pred = up.argmax(0).astype(np.uint8)
        gt = read_label_png(gt_path)
        if gt.shape != pred.shape:
            raise ValueError(f"{gt_path}: ground truth {gt.shape} differs from the image {pred.shape}")
        meter.update(pred, gt)
    return float(meter.scores(class_names)["miou"])


def evaluate_dirs(dirs: Mapping[str, Path], items: HeldOut, class_names: Sequence[str]) -> tuple[float, str]:
    """(mIoU %, what was scored) of a version given as {kind: model dir}: DeepLab, else SEAM."""
    if "deeplab" in dirs:
        return evaluate_deeplab(dirs["deeplab"], items, class_names), "deeplab"
    if "seam" in dirs:
        return evaluate_seam(dirs["seam"], items, class_names), "seam CAMs"
    raise ValueError("the version has neither a DeepLab nor a SEAM model to score")
