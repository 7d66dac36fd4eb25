"""Loading weights from any source we accept into our networks: the authors' state
dicts (with or without `module.` and `num_batches_tracked`), our own run checkpoints
(`{"model": state_dict, "config": ...}`), and MXNet ImageNet `.params`."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from seam.training.models.mxnet_params import convert_params, read_params
from seam.training.models.resnet38 import ResNet38Config


class CheckpointError(ValueError):
    pass


def read_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(state_dict, metadata). Metadata is empty for bare state dicts and `.params`."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    if path.suffix == ".params":
        return {k: torch.from_numpy(v) for k, v in convert_params(read_params(path)).items()}, {"source": "mxnet"}
    try:
        # weights_only: a checkpoint is data, never code
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises many types for bad files
        raise CheckpointError(f"cannot read checkpoint {path}: {exc}") from exc
    meta: dict[str, Any] = {}
    if isinstance(obj, dict) and "model" in obj and isinstance(obj["model"], dict):
        meta = {k: v for k, v in obj.items() if k != "model"}
        obj = obj["model"]
    elif isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        meta = {k: v for k, v in obj.items() if k != "state_dict"}
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(torch.is_tensor(v) for v in obj.values()):
        raise CheckpointError(f"{path} does not hold a state dict")
    return strip_prefix(obj), {**read_sidecar(path), **meta}


def sidecar_path(path: str | Path) -> Path:
    """Bare state dicts (the authors' format) carry their metadata in `<name>.json` beside them."""
    return Path(path).with_suffix(".json")


def read_sidecar(path: str | Path) -> dict[str, Any]:
    side = sidecar_path(path)
    if not side.is_file():
        return {}
    try:
        data = json.loads(side.read_text())
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{side}: invalid JSON ({exc})") from exc
    return data if isinstance(data, dict) else {}


def strip_prefix(sd: dict[str, torch.Tensor], prefixes: tuple[str, ...] = ("module.",)) -> dict[str, torch.Tensor]:
    out = {}
    for k, v in sd.items():
        for p in prefixes:
            if k.startswith(p):
                k = k[len(p):]
        out[k] = v
    return out


def infer_backbone_config(sd: dict[str, torch.Tensor]) -> ResNet38Config:
    """Recover width and depths from the keys and conv1a's shape."""
    if "conv1a.weight" not in sd:
        raise CheckpointError("not a ResNet-38 state dict (no conv1a.weight)")
    width = sd["conv1a.weight"].shape[0] / 64

    def depth(stage: int) -> int:
        return 1 + sum(1 for i in range(1, 16) if f"b{stage}_{i}.bn_branch2a.weight" in sd)

    return ResNet38Config(width=width, depths=(depth(2), depth(3), depth(4), depth(5)))


def load_weights(model: nn.Module, sd: dict[str, torch.Tensor], strict: bool = True) -> list[str]:
    """Load `sd` into `model`, reconciling `num_batches_tracked` either way.

    strict=False (ImageNet init) returns the model keys left uninitialised; shape
    mismatches always raise with the key named.
    """
    own = model.state_dict()
    sd = {k: v for k, v in strip_prefix(sd).items() if not (k.endswith("num_batches_tracked") and k not in own)}
    for k in own:
        if k.endswith("num_batches_tracked") and k not in sd:
            sd[k] = own[k]
    for k, v in sd.items():
        if k in own and own[k].shape != v.shape:
            raise CheckpointError(f"shape mismatch for {k}: checkpoint {tuple(v.shape)}, model {tuple(own[k].shape)}")
    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own]
    if strict and (missing or unexpected):
        raise CheckpointError(
            f"checkpoint does not fit the network: missing {missing[:5]}{'...' if len(missing) > 5 else ''}, "
            f"unexpected {unexpected[:5]}{'...' if len(unexpected) > 5 else ''}"
        )
    model.load_state_dict({k: v for k, v in sd.items() if k in own}, strict=False)
    return missing
