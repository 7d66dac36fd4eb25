"""Random-weight checkpoints the export tests and the benches share: ours (with a
sidecar) and the authors' formats, so every export path can be exercised without a
trained model."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from seam.training.models.registry import create_model

CLASSES = ["background", "circle", "square", "triangle"]


def make_checkpoint(path: Path, kind: str = "seam", backbone: str = "resnet38_small", num_classes: int = 4,
                    seed: int = 0, sidecar: dict | None = None, authors_format: bool = False) -> torch.nn.Module:
    """A random-weight checkpoint: ours ({"model", "config"} + sidecar) or the authors'
    bare state dict with the `module.` prefix of their DataParallel saves."""
    torch.manual_seed(seed)
    net = create_model(kind, backbone, num_classes).eval()
    sd = net.state_dict()
    if authors_format:
        torch.save({f"module.{k}": v for k, v in sd.items() if not k.endswith("num_batches_tracked")}, path)
    else:
        torch.save({"model": sd, "config": {"backbone": backbone, "epochs": 1}}, path)
    if sidecar is not None:
        path.with_suffix(".json").write_text(json.dumps(sidecar))
    return net


def authors_resnet38_state_dict(keys: dict[str, list[int]]) -> dict[str, torch.Tensor]:
    """Random weights under the authors' exact key names and shapes: BN at identity, convs
    scaled by sqrt(0.5 / fan_in) so that 38 layers keep activations in a sane range."""
    g = torch.Generator().manual_seed(0)
    sd = {}
    for k, shape in keys.items():
        if k.endswith("num_batches_tracked"):
            sd[k] = torch.tensor(0)
        elif k.endswith("running_var") or (k.endswith(".weight") and len(shape) == 1):
            sd[k] = torch.ones(shape)
        elif len(shape) == 1:
            sd[k] = torch.zeros(shape)
        else:
            fan_in = int(np.prod(shape[1:]))
            sd[k] = torch.randn(*shape, generator=g) * (0.5 / fan_in) ** 0.5
    return sd
