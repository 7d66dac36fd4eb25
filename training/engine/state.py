"""Run-directory files: the per-epoch resume checkpoint, the final bare state dict with
its JSON sidecar, RNG state capture/restore, and `--weights` initialisation."""
from __future__ import annotations

import json
import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from training.models.checkpoint import CheckpointError, load_weights, read_checkpoint, sidecar_path

CHECKPOINT_NAME = "checkpoint.pth"
FINAL_NAME = "seam_final.pth"


def atomic_torch_save(obj: Any, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def capture_rng() -> dict[str, Any]:
    """Global RNG states in types `torch.load(weights_only=True)` accepts."""
    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {"name": np_state[0], "keys": torch.from_numpy(np_state[1].astype(np.int64)),
                  "pos": int(np_state[2]), "has_gauss": int(np_state[3]), "gauss": float(np_state[4])},
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def load_resume_checkpoint(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise CheckpointError(f"--resume: no checkpoint at {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for bad files
        raise CheckpointError(f"cannot read {path}: {exc}") from exc


def bare_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The authors' format: a flat {key: tensor} on the CPU, no wrapper, no `module.`."""
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}


def save_final(run_dir: Path, model: nn.Module, sidecar: dict[str, Any]) -> Path:
    path = run_dir / FINAL_NAME
    atomic_torch_save(bare_state_dict(model), path)
    write_sidecar(path, sidecar)
    return path


def write_sidecar(weights: Path, sidecar: dict[str, Any]) -> Path:
    side = sidecar_path(weights)
    atomic_write_text(side, json.dumps(sidecar, indent=2, default=_json_default) + "\n")
    return side


def _json_default(o: Any) -> Any:
    if isinstance(o, Path):
        return str(o)
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def resolve_weights(path: str | Path) -> Path:
    """A weights file, or a previous run directory (its seam_final.pth, else checkpoint.pth)."""
    p = Path(path)
    if p.is_dir():
        for name in (FINAL_NAME, CHECKPOINT_NAME):
            if (p / name).is_file():
                return p / name
        raise CheckpointError(f"--weights {p}: a directory without {FINAL_NAME} or {CHECKPOINT_NAME}")
    if not p.is_file():
        raise CheckpointError(f"--weights: file not found: {p}")
    return p


def initialise_from(model: nn.Module, path: str | Path) -> dict[str, Any]:
    """Load ImageNet `.params`, a torch state dict (authors' or ours) or a run dir, strict=False.

    Keys of the new layers whose shapes differ (fc8 for another class count) are
    dropped and reported; any other shape mismatch is an error (wrong backbone).
    Returns {"source", "format", "missing", "unexpected", "reinitialised"}.
    """
    src = resolve_weights(path)
    sd, meta = read_checkpoint(src)
    own = model.state_dict()
    new_prefixes = tuple(f"{n}." for n, m in model.named_children() if m in model.new_modules())
    reinit = []
    for k in list(sd):
        if k in own and own[k].shape != sd[k].shape:
            if k.startswith(new_prefixes):
                reinit.append(f"{k} (checkpoint {tuple(sd[k].shape)}, model {tuple(own[k].shape)})")
                del sd[k]
            else:
                raise CheckpointError(
                    f"--weights {src}: {k} has shape {tuple(sd[k].shape)} but the network expects "
                    f"{tuple(own[k].shape)}; is --backbone right?")
    unexpected = sorted(k for k in sd if k not in own)
    missing = load_weights(model, sd, strict=False)
    missing = [k for k in missing if not k.endswith("num_batches_tracked")]
    return {"source": str(src), "format": meta.get("source", "torch"), "missing": missing,
            "unexpected": unexpected, "reinitialised": reinit}


def summarise_keys(keys: list[str]) -> str:
    """'fc8 (1), f9 (1), ...': module prefixes with key counts, for log lines."""
    counts: dict[str, int] = {}
    for k in keys:
        counts[k.split(".")[0]] = counts.get(k.split(".")[0], 0) + 1
    return ", ".join(f"{m} ({n})" for m, n in counts.items())
