"""The torch side of CAM inference: a `Runner` over a SEAM network. Everything after
the network (resizing, flips, aggregation, normalisation) is the shared numpy code in
`seam.common.cam`, which the onnxruntime engine uses too."""
from __future__ import annotations

import numpy as np
import torch

from seam.common.cam import Runner


def torch_runner(model: torch.nn.Module, device: str | torch.device = "cpu") -> Runner:
    """Wrap a SEAM network as a Runner: (B, 3, h, w) float32 -> (cam8, cam_rv8) numpy."""
    device = torch.device(device)
    model = model.to(device).eval()

    def run(batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        with torch.inference_mode():
            cam, rv = model.forward_stride8(torch.from_numpy(batch).to(device))
        return cam.float().cpu().numpy(), rv.float().cpu().numpy()

    return run


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"
