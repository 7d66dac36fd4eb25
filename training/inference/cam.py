"""The torch side of CAM inference: a `Runner` over a SEAM network. Everything after
the network (resizing, flips, aggregation, normalisation) is the shared numpy code in
`seam.common.cam`, which the onnxruntime engine uses too."""
from __future__ import annotations

import numpy as np
import torch

from seam.common.cam import Runner


def torch_runner(model: torch.nn.Module, device: str | torch.device = "cpu", refined: bool = True) -> Runner:
    """Wrap a SEAM network as a Runner: (B, 3, h, w) float32 -> (cam8, cam_rv8) numpy.
    refined=False skips the PCM and returns (cam8, cam8)."""
    device = torch.device(device)
    model = model.to(device).eval()

    def run(batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        with torch.inference_mode():  # no grad: the PCM runs in column blocks
            x = torch.from_numpy(batch).to(device)
            if not refined:
                cam = model.forward_cam(x).float().cpu().numpy()
                return cam, cam
            cam, rv = model.forward_stride8(x)
        return cam.float().cpu().numpy(), rv.float().cpu().numpy()

    return run


def default_device(device: str | None = None) -> str:
    """`device` when given, else cuda when torch sees a GPU, else cpu."""
    return device or ("cuda" if torch.cuda.is_available() else "cpu")
