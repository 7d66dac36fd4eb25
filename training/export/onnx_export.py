"""Checkpoint -> `models/NAME/{model.onnx, manifest.json}`, checked against eager torch.

The export refuses to write anything unless onnxruntime (with the engine's own
session settings) reproduces the eager network on several odd input sizes. The
model directory appears atomically: it is built in a temporary sibling directory
and renamed into place.
"""
from __future__ import annotations

import ast
import json
import logging
import re
import shutil
import tempfile
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import onnx
import torch
from seam.training.export.calibration import DEFAULT_CALIBRATION_N
from seam.training.export.graph_edits import EXTERNAL_DATA_BYTES, QuantizeError
from seam.training.export.model_dir import apply_precision, check_precision_args
from seam.training.export.specs import SPECS, ExportSpec, PcmGraph
from seam.training.models.checkpoint import CheckpointError
from seam.training.models.registry import model_from_checkpoint, train_long_side, working_set_bytes_per_pixel
from torch import nn

from seam.common.cam import DEFAULT_BG_THRESHOLD, DEFAULT_CLS_THRESHOLD, DEFAULT_SCALES
from seam.common.classes import VOC_CLASSES
from seam.common.image import IMAGENET_MEAN, IMAGENET_STD
from seam.modelrepo.manifest import (
    MANIFEST_NAME,
    MODEL_KINDS,
    PCM_INPUTS,
    PCM_OUTPUTS,
    CamSettings,
    DeepLabSettings,
    InputSpec,
    Manifest,
    OnnxFile,
    ParityCheck,
    PcmGraphFile,
    Provenance,
    RandomWalkSettings,
    file_sha256,
)
from seam.modelrepo.pcm import run_pcm
from seam.modelrepo.runtime import cpu_session

if TYPE_CHECKING:
    import onnxruntime as ort

log = logging.getLogger(__name__)

ONNX_FILE = "model.onnx"
PCM_FILE = "pcm.onnx"
DATA_FILE = "model.onnx.data"
IR_VERSION = 10  # onnxruntime 1.31 refuses onnx 1.23's default IR 14
DEFAULT_OPSET = 18
TRACE_SHAPE = (2, 3, 67, 93)  # batch >= 2 and odd H, W: no 0/1 specialisation
CHECK_SHAPES: tuple[tuple[int, int, int, int], ...] = ((1, 3, 37, 61), (1, 3, 200, 133), (2, 3, 96, 96))
DEFAULT_ATOL = 1e-4
MAX_SIDE = 4096


class ExportError(RuntimeError):
    """The export could not be produced or did not match eager torch; nothing was written."""


@dataclass
class ExportResult:
    model_dir: Path
    manifest: Manifest
    max_abs_diff: dict[str, float] = field(default_factory=dict)
    onnx_bytes: int = 0


def class_names_for(meta: dict[str, Any], num_classes: int | None) -> list[str]:
    """Background first. From the checkpoint's metadata/sidecar, else VOC for 21 classes."""
    names = meta.get("class_names")
    if names:
        names = [str(n) for n in names]
        if names[0] != "background":
            names = ["background", *names]
        if num_classes is not None and len(names) != num_classes:
            raise ExportError(f"checkpoint metadata names {len(names)} classes (with background), "
                              f"the network has {num_classes}")
        return names
    if num_classes is None:
        return []
    if num_classes == len(VOC_CLASSES):
        return list(VOC_CLASSES)
    return ["background", *[f"class_{i}" for i in range(num_classes - 1)]]


def _check_export_args(kind: str, name: str, precision: str, calibration: str | Path | None) -> None:
    """Fail before loading anything: unknown kind or precision, a name unfit for a directory."""
    if kind not in MODEL_KINDS:
        raise ExportError(f"unknown kind {kind!r}; choose from {', '.join(MODEL_KINDS)}")
    try:
        check_precision_args(precision, calibration)
    except QuantizeError as exc:
        raise ExportError(str(exc)) from exc
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name):
        raise ExportError(f"model name {name!r}: use letters, digits, '.', '_' and '-' (it becomes a directory)")


def _load_graph(checkpoint: Path, kind: str) -> tuple[nn.Module, dict[str, Any], list[str]]:
    """(the export graph in eval mode, the checkpoint's metadata, the class names)."""
    try:
        net, meta = model_from_checkpoint(checkpoint, kind)
    except CheckpointError as exc:
        raise ExportError(str(exc)) from exc
    except ValueError as exc:  # kind whose network module is not in this checkout
        raise ExportError(f"cannot build a {kind} network: {exc}") from exc
    num_classes = getattr(net, "num_classes", None) if kind != "affinity" else None
    return SPECS[kind].graph(net).eval(), meta, class_names_for(meta, num_classes)


def _write_graphs(graph: nn.Module, spec: ExportSpec, tmp: Path, opset: int, external_data: bool | None) -> None:
    """model.onnx (+ its .data) and, for SEAM, pcm.onnx in `tmp`, each valid ONNX."""
    n_bytes = sum(p.numel() * p.element_size() for p in graph.state_dict().values())
    use_external = n_bytes > EXTERNAL_DATA_BYTES if external_data is None else external_data
    _export_onnx(graph, spec, tmp / ONNX_FILE, opset, use_external)
    if spec.kind == "seam":
        _export_pcm(tmp / PCM_FILE, opset)
    for f in (ONNX_FILE, PCM_FILE):
        try:
            if (tmp / f).exists():
                onnx.checker.check_model(str(tmp / f))
        except onnx.checker.ValidationError as exc:
            raise ExportError(f"the exported graph {f} is not valid ONNX: {exc}") from exc


def _parity_within(graph: nn.Module, spec: ExportSpec, tmp: Path, check_shapes: Sequence[tuple[int, int, int, int]],
                   threads: int | None, atol: float) -> dict[str, float]:
    """Max |onnxruntime - eager torch| per output (SEAM: cam_rv through the PCM graph too);
    ExportError when one exceeds `atol` times its output's scale (check_parity). One session
    on model.onnx serves both checks."""
    sess = cpu_session(tmp / ONNX_FILE, threads)
    diffs, worst = check_parity(graph, spec, tmp / ONNX_FILE, check_shapes, threads, session=sess)
    if spec.kind == "seam":
        diffs["cam_rv"] = check_pcm_parity(graph.net, tmp / ONNX_FILE, tmp / PCM_FILE, check_shapes, threads,
                                           session=sess)
        worst = max(worst, diffs["cam_rv"])
    if not worst <= atol:  # NaN-safe
        raise ExportError(
            f"onnxruntime does not match torch (max diff {worst:.3g} of the output's scale > {atol:g}): "
            + ", ".join(f"{k}={v:.3g}" for k, v in diffs.items()) + "; nothing written"
        )
    return diffs


def export_model(
    checkpoint: str | Path,
    kind: str,
    name: str,
    models_dir: str | Path = "models",
    opset: int = DEFAULT_OPSET,
    force: bool = False,
    atol: float = DEFAULT_ATOL,
    check_shapes: Sequence[tuple[int, int, int, int]] = CHECK_SHAPES,
    external_data: bool | None = None,
    threads: int | None = None,
    working_side: int | None = None,
    cls_threshold: float | None = None,
    precision: str = "fp32",
    calibration: str | Path | None = None,
    calibration_n: int = DEFAULT_CALIBRATION_N,
) -> ExportResult:
    """Export `checkpoint` as `models_dir/name`. external_data None = by weight size.
    working_side: the long side inputs are resized to (default: the top of the training range).
    cls_threshold: class-prediction threshold (default: the sidecar's `class_prediction.cls_threshold`, else 0.5).
    precision: fp32, or int8 (calibrated on `calibration_n` images of `calibration`) / fp16,
    applied to the checked fp32 graph (`training/export/model_dir.py`)."""
    _check_export_args(kind, name, precision, calibration)
    checkpoint = Path(checkpoint)
    models_dir = Path(models_dir)
    target = models_dir / name
    if target.exists() and not force:
        raise ExportError(f"{target} already exists (use --force to replace it)")
    graph, meta, class_names = _load_graph(checkpoint, kind)
    spec = SPECS[kind]

    models_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.export-", dir=models_dir))
    tmp.chmod(0o755)  # mkdtemp's 0700 would hide the model from a service running as another user
    try:
        _write_graphs(graph, spec, tmp, opset, external_data)
        diffs = _parity_within(graph, spec, tmp, check_shapes, threads, atol)
        manifest = _manifest(name, kind, meta, class_names, checkpoint, tmp, opset, spec,
                             ParityCheck(shapes=tuple(check_shapes), max_abs_diff=diffs, tolerance=atol),
                             working_side, cls_threshold)
        if precision != "fp32":  # int8 / fp16 copy of the checked fp32 graph, in place
            try:
                manifest = apply_precision(tmp, manifest, precision, calibration, calibration_n, threads)
            except QuantizeError as exc:
                raise ExportError(str(exc)) from exc
        (tmp / MANIFEST_NAME).write_text(manifest.to_json())
        _replace_dir(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    size = sum(p.stat().st_size for p in target.iterdir() if p.is_file())
    log.info("exported %s (%s, %s) to %s: %.1f MB, max diff %s", name, kind, manifest.backbone, target,
             size / 1e6, diffs)
    return ExportResult(target, manifest, diffs, size)


def _export_onnx(graph: nn.Module, spec: ExportSpec, path: Path, opset: int, external: bool) -> None:
    x = torch.randn(*TRACE_SHAPE, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        outs = spec.reference(graph.net, x)
    try:
        spec.check_contract(graph.net, x, outs)
    except ValueError as exc:
        raise ExportError(str(exc)) from exc
    dims = {
        0: torch.export.Dim("batch", min=1, max=256),
        2: torch.export.Dim("height", min=1, max=MAX_SIDE),
        3: torch.export.Dim("width", min=1, max=MAX_SIDE),
    }
    with warnings.catch_warnings(), _quiet_exporter():
        warnings.simplefilter("ignore")
        try:
            program = torch.onnx.export(
                graph, (x,), dynamo=True, verbose=False, opset_version=opset,
                input_names=["image"], output_names=list(spec.outputs),
                dynamic_shapes={"image": dims}, optimize=True,
            )
        except Exception as exc:
            raise ExportError(f"torch.onnx.export failed for {spec.kind}: {exc}") from exc
    proto = _finish_proto(program.model_proto)
    if external:
        onnx.save_model(proto, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                        location=DATA_FILE, size_threshold=1024)
    else:
        onnx.save_model(proto, str(path))


def _export_pcm(path: Path, opset: int) -> None:
    """The PCM's column-block graph (no weights): dynamic batch, pixels and block width."""
    gen = torch.Generator().manual_seed(0)
    args = (torch.rand(2, 5, 77, generator=gen), torch.randn(2, 7, 77, generator=gen),
            torch.randn(2, 7, 13, generator=gen))
    b, c = torch.export.Dim("batch", min=1, max=256), torch.export.Dim("classes", min=1, max=4096)
    d = torch.export.Dim("dim", min=1, max=4096)
    n, m = torch.export.Dim("pixels", min=2, max=MAX_SIDE * MAX_SIDE), torch.export.Dim("block", min=1)
    shapes = {"pcm_n": {0: b, 1: c, 2: n}, "pcm_g": {0: b, 1: d, 2: n}, "pcm_q": {0: b, 1: d, 2: m}}
    with warnings.catch_warnings(), _quiet_exporter():
        warnings.simplefilter("ignore")
        try:
            program = torch.onnx.export(
                PcmGraph(), args, dynamo=True, verbose=False, opset_version=opset,
                input_names=list(PCM_INPUTS), output_names=list(PCM_OUTPUTS), dynamic_shapes=shapes,
                optimize=True,
            )
        except Exception as exc:
            raise ExportError(f"torch.onnx.export failed for the PCM block graph: {exc}") from exc
    onnx.save_model(_finish_proto(program.model_proto), str(path))


def _finish_proto(proto: onnx.ModelProto) -> onnx.ModelProto:
    """The IR version onnxruntime accepts, our producer name, no exporter metadata (provenance
    lives in the manifest)."""
    proto.ir_version = IR_VERSION
    del proto.metadata_props[:]
    proto.producer_name = "seam-wsss"
    return proto


def check_pcm_parity(net: nn.Module, onnx_path: Path, pcm_path: Path,
                     shapes: Sequence[tuple[int, int, int, int]], threads: int | None = None,
                     session: ort.InferenceSession | None = None) -> float:
    """Max |blocked onnxruntime PCM - the release's dense PCM (eager torch)| over `shapes`,
    with a block budget small enough to cut every shape into several blocks. `session`: one
    already open on `onnx_path`."""
    sess = session or cpu_session(onnx_path, threads)
    pcm_sess = cpu_session(pcm_path, threads)
    gen = torch.Generator().manual_seed(2)
    worst = 0.0
    for shape in shapes:
        x = torch.randn(*shape, generator=gen)
        with torch.enable_grad():  # the dense form, as the release computes it
            ref = net.forward_stride8(x)[1].detach().numpy()
        _, n, g = sess.run(list(SPECS["seam"].outputs), {"image": x.numpy()})
        hw = n.shape[-2] * n.shape[-1]
        got = run_pcm(pcm_sess, n, g, budget=4 * hw * shape[0] * max(1, hw // 3))
        d = float(np.abs(ref - got).max())
        worst = max(worst, d if np.isfinite(d) else float("inf"))
    return worst


class _quiet_exporter:
    """The dynamo exporter logs progress lines and optional-dependency warnings."""

    NAMES = ("torch.onnx", "torch.export", "torch._export", "onnxscript", "torch.fx")

    def __enter__(self) -> None:
        self._levels = {}
        for n in self.NAMES:
            lg = logging.getLogger(n)
            self._levels[n] = lg.level
            lg.setLevel(logging.ERROR)

    def __exit__(self, *exc: object) -> None:
        for n, level in self._levels.items():
            logging.getLogger(n).setLevel(level)


def check_parity(
    graph: nn.Module,
    spec: ExportSpec,
    onnx_path: Path,
    shapes: Sequence[tuple[int, int, int, int]],
    threads: int | None = None,
    session: ort.InferenceSession | None = None,
) -> tuple[dict[str, float], float]:
    """(max |onnxruntime - eager torch| per output over `shapes` (random inputs, fixed seed),
    the worst of those differences relative to its output's scale), using the engine's CPU
    session settings (graph optimisation ALL). The reference is the network's own forward
    (`spec.reference`), not the export graph. `session`: one already open on `onnx_path`.

    The scale is max(1, max |torch output|): normalised outputs (CAMs in [0, 1], unit
    embeddings) are judged on their absolute difference, unnormalised ones (DeepLab's logits,
    tens after training) on float32's relative error, which grows with their size."""
    sess = session or cpu_session(onnx_path, threads)
    gen = torch.Generator().manual_seed(1)
    diffs = dict.fromkeys(spec.outputs, 0.0)
    worst = 0.0
    for shape in shapes:
        x = torch.randn(*shape, generator=gen)
        with torch.no_grad():
            ref = spec.reference(graph.net, x)
        got = sess.run(list(spec.outputs), {"image": x.numpy()})
        for name, r, g in zip(spec.outputs, ref, got, strict=True):
            if tuple(r.shape) != g.shape:
                raise ExportError(f"output {name!r}: onnxruntime shape {g.shape} != torch {tuple(r.shape)} at {shape}")
            ref_np = r.numpy()
            d = float(np.abs(ref_np - g).max())
            d = d if np.isfinite(d) else float("inf")
            diffs[name] = max(diffs[name], d)
            worst = max(worst, d / max(1.0, float(np.abs(ref_np).max())))
    return diffs, worst


def _manifest(name: str, kind: str, meta: dict[str, Any], class_names: list[str], checkpoint: Path,
              tmp: Path, opset: int, spec: ExportSpec, parity: ParityCheck,
              working_side: int | None = None, cls_threshold: float | None = None) -> Manifest:
    ext = {DATA_FILE: file_sha256(tmp / DATA_FILE)} if (tmp / DATA_FILE).exists() else {}
    config = _as_dict(meta.get("config"))
    dataset = _as_dict(meta.get("dataset"))
    if meta.get("dataset_fingerprint"):
        dataset["fingerprint"] = meta["dataset_fingerprint"]
    norm = meta.get("normalization") or {}
    rw = _pick(meta.get("random_walk"), RandomWalkSettings)
    dl = _pick(meta.get("inference"), DeepLabSettings)
    backbone = str(meta.get("backbone", "resnet38"))
    train_range = train_long_side(config)
    return Manifest(
        name=name,
        kind=kind,
        backbone=backbone,
        class_names=tuple(class_names),
        input=InputSpec(mean=tuple(norm.get("mean", IMAGENET_MEAN)), std=tuple(norm.get("std", IMAGENET_STD)),
                        min_size=1, max_size=MAX_SIDE, train_long_side=train_range,
                        working_side=working_side or train_range[1],
                        bytes_per_pixel=working_set_bytes_per_pixel(backbone)),
        onnx=OnnxFile(sha256=file_sha256(tmp / ONNX_FILE), external_data=ext, ir_version=IR_VERSION,
                      opset=opset, outputs=spec.outputs),
        pcm=PcmGraphFile(sha256=file_sha256(tmp / PCM_FILE)) if kind == "seam" else None,
        cam=CamSettings(scales=DEFAULT_SCALES, flip=True, refined=True, bg_threshold=DEFAULT_BG_THRESHOLD,
                        cls_threshold=_cls_threshold(meta) if cls_threshold is None else cls_threshold)
        if kind == "seam" else None,
        random_walk=RandomWalkSettings(**rw) if kind == "affinity" else None,
        deeplab=DeepLabSettings(**dl) if kind == "deeplab" else None,
        provenance=Provenance(
            checkpoint=checkpoint.name,
            checkpoint_sha256=file_sha256(checkpoint),
            training_config=config,
            dataset=dataset,
            training=_as_dict(meta.get("training")),
            created=datetime.now(UTC).replace(microsecond=0),
            torch_version=torch.__version__,
            onnx_version=onnx.__version__,
            exporter="torch.onnx.export(dynamo=True)",
            parity=parity,
        ),
    )


def _cls_threshold(meta: dict[str, Any]) -> float:
    """The class-prediction threshold chosen for this checkpoint on held-out images (the
    sidecar's `class_prediction.cls_threshold`), else the default."""
    chosen = (meta.get("class_prediction") or {}).get("cls_threshold")
    return float(chosen) if isinstance(chosen, (int, float)) and 0 <= chosen <= 1 else DEFAULT_CLS_THRESHOLD


def _pick(section: Any, settings: type) -> dict[str, Any]:
    """The keys of a checkpoint metadata section that a manifest settings model knows."""
    if not isinstance(section, dict):
        return {}
    return {k: v for k, v in section.items() if k in settings.model_fields}


def _as_dict(obj: Any) -> dict[str, Any]:
    """A metadata section as a JSON-able dict; sidecars may hold a dict's repr() string."""
    if isinstance(obj, str):
        try:
            obj = ast.literal_eval(obj)
        except (ValueError, SyntaxError):
            return {"value": obj}
    if obj is None:
        return {}
    obj = json.loads(json.dumps(obj, default=str))
    return obj if isinstance(obj, dict) else {"value": obj}


def _replace_dir(src: Path, dst: Path) -> None:
    """Rename `src` to `dst`; an existing `dst` is moved aside first and removed after."""
    old = None
    if dst.exists():
        old = dst.with_name(f".{dst.name}.old-{datetime.now().strftime('%Y%m%d%H%M%S%f')}")
        dst.rename(old)
    try:
        src.rename(dst)
    except OSError:
        if old is not None:
            old.rename(dst)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
