"""Run-directory files: the per-epoch resume checkpoint, the final bare state dict with
its JSON sidecar, RNG state capture/restore, and `--weights` initialisation (SEAM's
`initialise_from`, the AffinityNet / DeepLab stages' `initialise_stage_from`)."""
from __future__ import annotations

import json
import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from seam.training.models.checkpoint import CheckpointError, load_weights, read_checkpoint, sidecar_path
from torch import nn

CHECKPOINT_NAME = "checkpoint.pth"
SEAM_FINAL = "seam_final.pth"


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


def save_final(run_dir: Path, model: nn.Module, sidecar: dict[str, Any], name: str = SEAM_FINAL) -> Path:
    """RUN_DIR/<name>: the bare state dict, with its JSON sidecar beside it."""
    path = run_dir / name
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
        for name in (SEAM_FINAL, CHECKPOINT_NAME):
            if (p / name).is_file():
                return p / name
        raise CheckpointError(f"--weights {p}: a directory without {SEAM_FINAL} or {CHECKPOINT_NAME}")
    if not p.is_file():
        raise CheckpointError(f"--weights: file not found: {p}")
    return p


def head_prefixes(model: nn.Module) -> tuple[str, ...]:
    """'fc8.', ...: the module prefixes of the layers the backbone's checkpoints lack."""
    return tuple(f"{n}." for n, m in model.named_children() if m in model.new_modules())


def _load_fitting(model: nn.Module, sd: dict[str, torch.Tensor], src: Path) -> tuple[list[str], list[str], list[str]]:
    """Load `sd` strict=False, leaving out head keys whose shapes differ from the model's
    (any other shape mismatch means the wrong backbone: an error).
    Returns (head keys left out, unexpected keys, model keys left uninitialised)."""
    own = model.state_dict()
    head = head_prefixes(model)
    left_out = []
    for k, v in sd.items():
        if k in own and own[k].shape != v.shape:
            if not k.startswith(head):
                raise CheckpointError(f"--weights {src}: {k} has shape {tuple(v.shape)} but the network expects "
                                      f"{tuple(own[k].shape)}; is --backbone right?")
            left_out.append(k)
    sd = {k: v for k, v in sd.items() if k not in left_out}
    unexpected = sorted(k for k in sd if k not in own)
    missing = [k for k in load_weights(model, sd, strict=False) if not k.endswith("num_batches_tracked")]
    return left_out, unexpected, missing


def initialise_from(model: nn.Module, path: str | Path) -> dict[str, Any]:
    """SEAM: load ImageNet `.params`, a torch state dict (authors' or ours) or a run dir, strict=False.

    Keys of the new layers whose shapes differ (fc8 for another class count) are
    dropped and reported; any other shape mismatch is an error (wrong backbone).
    Returns {"source", "format", "missing", "unexpected", "reinitialised"}.
    """
    src = resolve_weights(path)
    sd, meta = read_checkpoint(src)
    own = model.state_dict()
    reinit, unexpected, missing = _load_fitting(model, sd, src)
    return {"source": str(src), "format": meta.get("source", "torch"), "missing": missing, "unexpected": unexpected,
            "reinitialised": [f"{k} (checkpoint {tuple(sd[k].shape)}, model {tuple(own[k].shape)})" for k in reinit]}


def initialise_stage_from(model: nn.Module, path: str | Path, kind: str) -> dict[str, Any]:
    """AffinityNet / DeepLab (`kind`): strict=False initialisation from ImageNet `.params`, a SEAM /
    AffinityNet / DeepLab checkpoint or a run dir. Head layers are taken only from a checkpoint
    of the same kind (a SEAM checkpoint gives the backbone); any other shape mismatch is an error.
    Returns {"source", "format", "missing", "unexpected", "skipped_head"}."""
    src = resolve_weights(path)
    sd, meta = read_checkpoint(src)
    if kind == "deeplab":
        from seam.training.models.deeplab import from_authors_state_dict, is_authors_state_dict

        if is_authors_state_dict(sd):  # the authors' released deeplabv1: their key names
            sd, meta = from_authors_state_dict(sd), {**meta, "kind": "deeplab", "source": "authors deeplabv1"}
    skipped = []
    if meta.get("kind") != kind:
        skipped = sorted(k for k in sd if k.startswith(head_prefixes(model)))
        sd = {k: v for k, v in sd.items() if k not in skipped}
    mismatched, unexpected, missing = _load_fitting(model, sd, src)
    return {"source": str(src), "format": meta.get("source", meta.get("kind", "torch")), "missing": missing,
            "unexpected": unexpected, "skipped_head": skipped + mismatched}


def summarise_keys(keys: list[str]) -> str:
    """'fc8 (1), f9 (1), ...': module prefixes with key counts, for log lines."""
    counts: dict[str, int] = {}
    for k in keys:
        counts[k.split(".")[0]] = counts.get(k.split(".")[0], 0) + 1
    return ", ".join(f"{m} ({n})" for m, n in counts.items())
