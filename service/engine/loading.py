"""Loading a model repository: one model directory per kind, each checked against its manifest
and opened as onnxruntime sessions."""
from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import onnxruntime as ort
from seam.service.engine.base import ModelInfo

from seam.common.image import Normalization
from seam.modelrepo.manifest import MANIFEST_NAME, MODEL_KINDS, Manifest, ManifestError, load_model_dir
from seam.modelrepo.runtime import CPU, RuntimeConfig, create_session

log = logging.getLogger(__name__)

# channels of the PCM embedding (pcm_g) when the graph does not fix them
DEFAULT_PCM_DIM = 256


@dataclass
class LoadedModel:
    name: str
    path: Path
    manifest: Manifest
    session: ort.InferenceSession
    provider: str
    pcm_session: ort.InferenceSession | None = None

    @property
    def normalization(self) -> Normalization:
        return Normalization(tuple(self.manifest.input.mean), tuple(self.manifest.input.std))

    @property
    def scales(self) -> tuple[float, ...]:
        """The scales of its multi-scale passes (DeepLab's own, else the CAMs')."""
        mf = self.manifest
        return tuple(mf.deeplab.scales if mf.kind == "deeplab" else mf.cam.scales)

    @property
    def pcm_dim(self) -> int:
        """Channels of the PCM embedding (pcm_g), from the graph when it is static."""
        d = self.session.get_outputs()[-1].shape[1]
        return d if isinstance(d, int) else DEFAULT_PCM_DIM

    def info(self) -> ModelInfo:
        cam = self.manifest.cam
        return ModelInfo(
            name=self.name, kind=self.manifest.kind, backbone=self.manifest.backbone,
            classes=self.manifest.foreground, provider=self.provider,
            manifest=self.manifest.model_dump(mode="json"), description=self.manifest.description,
            cls_threshold=cam.cls_threshold if cam else None, bg_threshold=cam.bg_threshold if cam else None,
        )


def choose_models(models_dir: Path, *, verify: bool, select: Mapping[str, str],
                  dirs: Sequence[Path] | None = None) -> dict[str, tuple[Path, Manifest]]:
    """{kind: (directory, manifest)} of the repository `models_dir` (or of the model directories
    `dirs`), one model per kind, before any session is opened."""
    dirs = list(dirs) if dirs is not None else _scan(models_dir)
    if not dirs:
        raise ManifestError(f"no models in {models_dir} (expected sub-directories with {MANIFEST_NAME}; "
                            "create one with `seam export`)")
    manifests = {d: load_model_dir(d, verify=verify) for d in dirs}
    return {kind: (d, manifests[d]) for kind, d in _choose(manifests, select).items()}


def open_models(chosen: Mapping[str, tuple[Path, Manifest]], runtime: RuntimeConfig) -> dict[str, LoadedModel]:
    models = {kind: _open(d, mf, runtime) for kind, (d, mf) in chosen.items()}
    _check_classes(models)
    return models


def _open(d: Path, mf: Manifest, runtime: RuntimeConfig) -> LoadedModel:
    sess, got = create_session(d / mf.onnx.file, runtime)
    _check_io(sess, mf, d)
    pcm_sess = create_session(d / mf.pcm.file, runtime)[0] if mf.pcm is not None else None
    want = mf.precision.provider
    if want != "any" and (want == "cuda") != (got != CPU):
        log.warning("%s holds %s weights, which pay on %s; here it runs on %s (slower than fp32: "
                    "export an fp32 model for this provider)", d.name, mf.precision.weights, want.upper(), got)
    log.info("loaded %s (%s, %s) on %s, %d threads", d.name, mf.kind, mf.backbone, got, runtime.threads)
    return LoadedModel(d.name, d, mf, sess, got, pcm_sess)


def _scan(models_dir: Path) -> list[Path]:
    if not models_dir.is_dir():
        raise ManifestError(f"model repository {models_dir} does not exist")
    return [d for d in sorted(models_dir.iterdir())
            if d.is_dir() and not d.name.startswith(".") and (d / MANIFEST_NAME).is_file()]


def _choose(manifests: dict[Path, Manifest], select: Mapping[str, str]) -> dict[str, Path]:
    """One model directory per kind, in MODEL_KINDS order."""
    unknown = set(select) - set(MODEL_KINDS)
    if unknown:
        raise ValueError(f"select: unknown kinds {sorted(unknown)}")
    chosen: dict[str, Path] = {}
    for kind in MODEL_KINDS:
        cands = [d for d, mf in manifests.items() if mf.kind == kind]
        if kind in select:
            match = [d for d in cands if d.name == select[kind]]
            if not match:
                raise ManifestError(f"select: no {kind} model named {select[kind]!r} "
                                    f"(have: {', '.join(d.name for d in cands) or 'none'})")
            chosen[kind] = match[0]
        elif cands:
            if len(cands) > 1:
                log.warning("%d %s models (%s); using %s (choose with select=)", len(cands), kind,
                            ", ".join(d.name for d in cands), cands[0].name)
            chosen[kind] = cands[0]
    return chosen


def _check_io(sess: ort.InferenceSession, mf: Manifest, d: Path) -> None:
    ins = [i.name for i in sess.get_inputs()]
    outs = [o.name for o in sess.get_outputs()]
    if ins != [mf.input.name] or outs != list(mf.onnx.outputs):
        raise ManifestError(f"{d}: graph inputs {ins} / outputs {outs} do not match the manifest "
                            f"({mf.input.name} / {list(mf.onnx.outputs)})")


def _check_classes(models: Mapping[str, LoadedModel]) -> None:
    seam, deeplab = models.get("seam"), models.get("deeplab")
    if seam and deeplab and seam.manifest.class_names != deeplab.manifest.class_names:
        raise ManifestError(f"{seam.name} and {deeplab.name} have different class names; "
                            "a repository serves one label set")
