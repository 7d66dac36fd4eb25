"""Torch inference for the networks after SEAM: AffinityNet feature maps (the random walk
itself is the shared numpy `seam.common.random_walk`) and DeepLab multi-scale + flip
segmentation with optional dense CRF.

DeepLab follows the authors' test protocol (semantic-segmentation-codebase,
experiment/seamv1-pseudovoc: config.py TEST_MULTISCALE / TEST_FLIP / TEST_CRF, test.py
`collect_func`, lib/utils/DenseCRF.py): scales 0.5, 0.75, 1.0, 1.25, 1.5, 1.75, each with
its flip; every pass's logits upsampled to the pass input (align_corners=True, inside
their network) and then to the image (align_corners=True), flips undone, the MEAN OF THE
LOGITS over passes, softmax, then a dense CRF with ONE mean-field iteration (Gaussian
sxy 3 compat 3, bilateral sxy 32 srgb 13 compat 10 - not the CAM stage's 10 iterations
and sxy 80), argmax. One difference: the authors rescale the normalised float image with
OpenCV's bicubic; we rescale the uint8 image with Pillow's bicubic (no OpenCV dependency).
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from seam.common.cam import OUTPUT_STRIDE
from seam.common.image import Normalization, resize_rgb, scaled_size
from seam.common.random_walk import grid_size

DEFAULT_SEG_SCALES: tuple[float, ...] = (0.5, 0.75, 1.0, 1.25, 1.5, 1.75)  # TEST_MULTISCALE
# lib/utils/DenseCRF.py as test.py calls it (n_iters=1)
SEG_CRF: dict[str, float] = {"iters": 1, "gauss_sxy": 3, "gauss_compat": 3, "bi_sxy": 32, "bi_srgb": 13,
                             "bi_compat": 10}
_DEFAULT_NORMALIZATION = Normalization()


def affinity_features(model: torch.nn.Module, rgb: np.ndarray, device: str | torch.device = "cpu",
                      normalization: Normalization = _DEFAULT_NORMALIZATION) -> np.ndarray:
    """(H, W, 3) uint8 -> AffinityNet features (448, ceil(H/8), ceil(W/8)) float32.

    As the release's infer_aff: the normalised image is zero-padded at the bottom and
    right to a multiple of 8 before the network."""
    H, W = rgb.shape[:2]
    x = torch.from_numpy(normalization(rgb))[None]
    x = F.pad(x, (0, grid_size(W) * OUTPUT_STRIDE - W, 0, grid_size(H) * OUTPUT_STRIDE - H))
    with torch.inference_mode():
        f = model.to(device).eval()(x.to(device))
    return f[0].float().cpu().numpy()


def segment_probs(model: torch.nn.Module, rgb: np.ndarray, scales: Sequence[float] = DEFAULT_SEG_SCALES,
                  flip: bool = True, device: str | torch.device = "cpu",
                  normalization: Normalization = _DEFAULT_NORMALIZATION) -> np.ndarray:
    """Softmax of the mean logits over scales (and flips) at image size: (C, H, W) float32
    (the authors' test.py; see the module docstring)."""
    H, W = rgb.shape[:2]
    model = model.to(device).eval()
    total = None
    n = 0
    with torch.inference_mode():
        for s in scales:
            h, w = scaled_size((H, W), s)
            x = torch.from_numpy(normalization(resize_rgb(rgb, (h, w))))[None]
            batch = torch.cat([x, x.flip(-1)]) if flip else x
            logits = model(batch.to(device)).float()
            logits = F.interpolate(logits, (h, w), mode="bilinear", align_corners=True)  # their network
            logits = F.interpolate(logits, (H, W), mode="bilinear", align_corners=True)  # their collect_func
            z = logits[0] + logits[1].flip(-1) if flip else logits[0]
            total = z if total is None else total + z
            n += batch.shape[0]
    return (total / n).softmax(dim=0).cpu().numpy()


def segment_label(model: torch.nn.Module, rgb: np.ndarray, scales: Sequence[float] = DEFAULT_SEG_SCALES,
                  flip: bool = True, crf: bool = False, device: str | torch.device = "cpu") -> np.ndarray:
    """(H, W) uint8 label map: argmax of the multi-scale probabilities, optionally after
    the authors' dense CRF."""
    probs = segment_probs(model, rgb, scales, flip, device)
    if crf:
        from seam.common.crf import dense_crf

        probs = dense_crf(rgb, probs, **SEG_CRF)
    return probs.argmax(axis=0).astype(np.uint8)
