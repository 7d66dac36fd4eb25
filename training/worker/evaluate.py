"""A version scored on the held-out split: the SEAM model's ONNX graphs (what the service
serves, not the torch weights), CAMs given each image's tags at scale 1 with flip, the
manifest's background threshold, mIoU against the ground-truth PNGs. The new version and the
promoted one are scored the same way on the same images, so their numbers compare."""
from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from seam.training.data.label_png import read_label_png

from seam.common.cam import MultiScaleConfig, cams_to_label, multiscale_cam
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
