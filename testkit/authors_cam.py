"""The authors' infer_SEAM for one image, re-implemented the way the release runs it and
independently of `seam.common.cam`, so that the shared CAM code (tests) and the
onnxruntime engine (bench/inference.py) can be compared against it."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from seam.common.image import IMAGENET_MEAN, IMAGENET_STD


def _passes(rgb: np.ndarray, scales: Sequence[float], flip: bool, mean: Sequence[float],
            std: Sequence[float]) -> list[np.ndarray]:
    """The release's inputs: PIL bicubic rescale per scale, then each one's mirror image."""
    H, W = rgb.shape[:2]
    img = Image.fromarray(rgb)
    passes = []
    for s in scales:
        im = img.resize((round(W * s), round(H * s)), resample=Image.BICUBIC)
        arr = (np.asarray(im, np.float32) / 255.0 - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
        chw = np.ascontiguousarray(arr.transpose(2, 0, 1))
        passes.append(chw)
        if flip:
            passes.append(np.flip(chw, -1).copy())
    return passes


def authors_infer_seam(model: torch.nn.Module, rgb: np.ndarray, label: np.ndarray,
                       scales: Sequence[float] = (0.5, 1.0, 1.5, 2.0), flip: bool = True,
                       mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD) -> np.ndarray:
    """(num_fg, H, W) normalised maps of one image, one network pass at a time: the
    network's own upsampling of cam_rv, F.interpolate to the image size, label mask,
    un-flip, sum, min-max normalisation (-1 for an unlabelled class, as in the release)."""
    H, W = rgb.shape[:2]
    cams = []
    with torch.no_grad():
        for i, x in enumerate(_passes(rgb, scales, flip, mean, std)):
            _, cam = model(torch.from_numpy(x)[None])  # cam_rv upsampled, align_corners=True
            cam = F.interpolate(cam[:, 1:, :, :], (H, W), mode="bilinear", align_corners=False)[0]
            cam = cam.numpy() * label.reshape(-1, 1, 1)
            if flip and i % 2 == 1:
                cam = np.flip(cam, axis=-1)
            cams.append(cam)
    sum_cam = np.sum(cams, axis=0)
    sum_cam[sum_cam < 0] = 0
    cam_max = np.max(sum_cam, (1, 2), keepdims=True)
    cam_min = np.min(sum_cam, (1, 2), keepdims=True)
    sum_cam[sum_cam < cam_min + 1e-5] = 0
    return (sum_cam - cam_min - 1e-5) / (cam_max - cam_min + 1e-5)
