"""From final weights to a published version: the export (with its own onnxruntime-vs-torch
parity check) of each kind into the training's export/ directory, then
`seam.modelrepo.versions.publish_version`, and the checkpoints kept beside the version so
that a later training can fine-tune from it (`base_checkpoints`).

Where the checkpoints are kept: `models/NAME/<n>/.checkpoints/<kind>_final.pth` (+ .json
sidecar). The hidden directory is invisible to the repository's scan, fingerprint and
checksums (they read manifests and the files manifests name), so the version stays what the
service serves; it is written after the version's atomic rename, and a reader checks each
file against the manifest's `provenance.checkpoint_sha256` before trusting it. A version
without it (exported by hand: ONNX only) cannot be fine-tuned from; `base_checkpoints` says so.
"""
from __future__ import annotations

import shutil
import uuid
from collections.abc import Mapping
from pathlib import Path

from seam.training.export import export_model

from seam.common.files import file_sha256
from seam.modelrepo.manifest import read_manifest
from seam.modelrepo.versions import ModelVersion, publish_version, resolve

CHECKPOINTS_DIR = ".checkpoints"
# largest |onnxruntime - torch| the export accepts per kind, as a fraction of the output's scale
# (check_parity: max(1, max |output|)): the exporter's default for the CAMs and embeddings; a trained
# DeepLab's logits (tens) met float32 noise of 5e-4..3.4e-3 in fits here, so its bound is 1e-3 of them
PARITY_ATOL = {"seam": 1e-4, "affinity": 1e-4, "deeplab": 1e-3}


class BaseModelError(ValueError):
    """The base model cannot be fine-tuned from (unknown, or ONNX only)."""


def export_kinds(finals: Mapping[str, Path], export_dir: Path, log) -> dict[str, Path]:
    """{kind: model dir} under export_dir, each parity-checked by the exporter."""
    out = {}
    for kind, final in finals.items():
        res = export_model(final, kind, kind, export_dir, force=True, atol=PARITY_ATOL.get(kind, 1e-4))
        diffs = ", ".join(f"{k} {v:.2g}" for k, v in res.max_abs_diff.items())
        log(f"exported {kind} to {res.model_dir} (onnxruntime vs torch max |diff|: {diffs})")
        out[kind] = res.model_dir
    return out


def keep_checkpoints(version_dir: Path, finals: Mapping[str, Path]) -> Path:
    """Copy the final weights (+ sidecars) into version_dir/.checkpoints (hidden temp + rename)."""
    tmp = version_dir / f".checkpoints.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    for final in finals.values():
        shutil.copy2(final, tmp / final.name)
        side = final.with_suffix(".json")
        if side.is_file():
            shutil.copy2(side, tmp / side.name)
    target = version_dir / CHECKPOINTS_DIR
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)
    return target


def publish(repo: Path, name: str, dirs: Mapping[str, Path], finals: Mapping[str, Path], promote: bool,
            note: str) -> ModelVersion:
    """Publish `dirs` as the next version of `name` and keep `finals` beside it."""
    number = publish_version(repo, name, dict(dirs), promote=promote, note=note)
    version = resolve(repo, f"{name}:{number}")
    keep_checkpoints(version.path, finals)
    return version


def base_checkpoints(repo: Path, ref: str) -> tuple[ModelVersion, dict[str, Path]]:
    """The version `ref` names and {kind: checkpoint} of the kinds it can be fine-tuned from."""
    try:
        version = resolve(repo, ref)
    except (LookupError, ValueError) as exc:
        raise BaseModelError(f"base_model {ref!r}: {exc}") from exc
    found: dict[str, Path] = {}
    for kind, d in version.dirs.items():
        mf = read_manifest(d)
        ck = version.path / CHECKPOINTS_DIR / mf.provenance.checkpoint
        if ck.is_file() and file_sha256(ck) == mf.provenance.checkpoint_sha256:
            found[kind] = ck
    if not found:
        raise BaseModelError(
            f"base_model {version.ref} has no checkpoint to fine-tune from (an ONNX-only version: its "
            f"{CHECKPOINTS_DIR}/ is missing or does not match its manifests); versions published by a "
            "training keep theirs")
    return version, found
