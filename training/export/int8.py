"""Static int8 (QDQ) copies of an exported graph for CPUs.

onnxruntime's static quantization in QDQ form, weights per output channel, activations
calibrated on the user's own images (`calibration.py`). Several calibration methods are
tried and the one whose outputs are closest to the fp32 graph's on held-out images is
kept: the choice is measured, not assumed.

What stays in fp32 (and why):
- every node but convolutions and ReLUs: the convolutions are >99 % of the MACs; a
  quantized ReLU disappears into its convolution's u8 output range; the other
  elementwise ops (BN, residual Add) would only gain quantize/dequantize pairs;
- by default the *head* convolutions (the last convolution before each graph output,
  e.g. SEAM's fc8 and f9): they are a tiny share of the MACs, and their outputs are
  what the user sees (the CAM) or feed a normalisation (the PCM embedding), so an
  8-bit output grid there is pure loss;
- everything downstream of a head (CAM normalisation, L2 normalisation).

Works on any single-input ONNX graph; the caller supplies calibration batches.
"""
from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
from seam.training.export.calibration import CALIBRATION_METHODS, calibrate
from seam.training.export.compare import OutputError, compare_to_reference, reference_outputs
from seam.training.export.graph_edits import (
    EXTERNAL_DATA_BYTES,
    QuantizeError,
    conv_nodes,
    downstream_nodes,
    ensure_node_names,
    head_convs,
    save_model,
    weights_bytes,
)

log = logging.getLogger(__name__)


# Conv carries the arithmetic. Quantizing the ReLUs too lets the quantizer drop them into
# the convolution's output range (u8 from 0), so onnxruntime chains QLinearConv ->
# QLinearConv without a dequantize/requantize pair between them: ResNet-38 3.0x instead
# of 2.65x, and a smaller CAM error. Adding the residual Adds (QLinearAdd) was slower and
# less accurate (bench/quantize.py --op-types; numbers in docs/models.md).
DEFAULT_OP_TYPES: tuple[str, ...] = ("Conv", "Relu")


@dataclass
class MethodTrial:
    method: str
    errors: dict[str, OutputError]
    seconds: float  # quantization from the shared calibration ranges


@dataclass
class QuantizeResult:
    path: Path
    method: str  # the calibration method kept
    trials: list[MethodTrial]
    quantized_nodes: list[str]
    excluded_nodes: list[str]
    calibration_batches: int
    eval_batches: int
    score_output: str
    extra: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        """JSON-able summary (for manifests and benchmark output)."""
        return {
            "method": self.method,
            "score_output": self.score_output,
            "trials": [{"method": t.method, "seconds": round(t.seconds, 2),
                        "errors": {k: vars(v) for k, v in t.errors.items()}} for t in self.trials],
            "quantized_convs": len(self.quantized_nodes),
            "fp32_nodes": self.excluded_nodes,
            "calibration_batches": self.calibration_batches,
            "eval_batches": self.eval_batches,
            **self.extra,
        }


_METHOD_ENUM = {"minmax": "MinMax", "entropy": "Entropy", "percentile": "Percentile"}


@dataclass(frozen=True)
class _Int8Job:
    """What every calibration method's trial shares: the graph, its nodes to quantize and how."""

    fp32_path: Path
    src: Path  # fp32_path, or a copy of it whose nodes all have names
    work_dir: Path
    input_name: str
    nodes: list[str]
    op_types: Sequence[str]
    per_channel: bool
    external: bool


def _quantize_once(job: _Int8Job, out_path: Path, ranges, method: str) -> None:
    """quantize_static from precomputed ranges (its calibration cache: no network pass)."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.calibrate import save_tensors_data

    cache = job.work_dir / f"ranges-{method}.json"
    save_tensors_data(ranges, cache)
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # its "consider pre-processing": the exporter already optimised the graph
    try:
        quantize_static(
            str(job.src), str(out_path), None,
            quant_format=QuantFormat.QDQ,
            op_types_to_quantize=list(job.op_types),
            nodes_to_quantize=job.nodes,
            per_channel=job.per_channel,
            reduce_range=False,  # VNNI / AMX accumulate u8 x s8 without saturation
            activation_type=QuantType.QUInt8,  # u8 activations x s8 weights: the x86 fast path
            weight_type=QuantType.QInt8,
            calibrate_method=getattr(CalibrationMethod, _METHOD_ENUM[method]),
            use_external_data_format=job.external,
            calibration_cache_path=str(cache),
        )
    finally:
        root.setLevel(level)


def _check_quantize_inputs(fp32_path: Path, calibration_batches: Sequence[np.ndarray], input_name: str,
                           methods: Sequence[str], score_output: str | None) -> tuple[str, bool, bool]:
    """Fail before any work; else (the scored output, whether the weights go to a .data file,
    whether some nodes have no name)."""
    unknown = [m for m in methods if m not in CALIBRATION_METHODS]
    if unknown or not methods:
        raise QuantizeError(f"calibration methods {list(methods)}: choose from {', '.join(CALIBRATION_METHODS)}")
    if not calibration_batches:
        raise QuantizeError("no calibration batches")
    model = onnx.load(str(fp32_path), load_external_data=False)
    if len(model.graph.input) != 1 or model.graph.input[0].name != input_name:
        raise QuantizeError(f"{fp32_path.name}: expected one input named {input_name!r}, "
                            f"got {[i.name for i in model.graph.input]}")
    outputs = [o.name for o in model.graph.output]
    score_output = score_output or outputs[0]
    if score_output not in outputs:
        raise QuantizeError(f"score output {score_output!r} is not one of {outputs}")
    return score_output, weights_bytes(model) > EXTERNAL_DATA_BYTES, any(not n.name for n in model.graph.node)


def _named_copy(fp32_path: Path, work_dir: Path, external: bool) -> Path:
    """A copy whose anonymous nodes have names: quantize_static selects nodes by name."""
    m = onnx.load(str(fp32_path))
    ensure_node_names(m)
    src = work_dir / "named.onnx"
    save_model(m, src, external)
    return src


def _select_nodes(src: Path, op_types: Sequence[str], keep_heads_fp32: bool,
                  nodes_to_exclude: Sequence[str]) -> tuple[list[str], list[str], list[str]]:
    """(the nodes to quantize, the convolutions among them, the convolutions kept fp32)."""
    m = onnx.load(str(src), load_external_data=False)
    convs = set(conv_nodes(m))
    heads = head_convs(m)
    excluded = set(nodes_to_exclude)
    if keep_heads_fp32:
        excluded |= set(heads)
    # nothing after a head (CAM / embedding normalisations) is quantized, whatever its type
    after = set(downstream_nodes(m, heads))
    nodes = [n.name for n in m.graph.node
             if n.op_type in op_types and n.name not in excluded and n.name not in after]
    return nodes, [n for n in nodes if n in convs], sorted(excluded & convs)


def _calibrate_timed(job: _Int8Job, batches: Sequence[np.ndarray], methods: Sequence[str]) -> tuple[dict, float]:
    """`calibrate`'s ranges per method and the seconds it took."""
    t0 = time.perf_counter()
    try:
        ranges = calibrate(job.src, batches, job.input_name, methods, job.work_dir, job.external, job.op_types)
    except Exception as exc:  # onnxruntime raises plain Exceptions of many kinds
        raise QuantizeError(f"calibration failed: {exc}") from exc
    seconds = time.perf_counter() - t0
    log.info("calibration: %d batches, %.1f s", len(batches), seconds)
    return ranges, seconds


def _trial(job: _Int8Job, cand: Path, ranges, method: str, eval_batches: Sequence[np.ndarray],
           reference: dict[str, list[np.ndarray]], threads: int | None) -> MethodTrial:
    """Quantize with one method's ranges into `cand` and measure it against fp32 (`reference`:
    the fp32 graph's outputs on `eval_batches`)."""
    cand.parent.mkdir()
    t0 = time.perf_counter()
    try:
        _quantize_once(job, cand, ranges, method)
    except Exception as exc:
        raise QuantizeError(f"quantization ({method}) failed: {exc}") from exc
    seconds = time.perf_counter() - t0
    return MethodTrial(method, compare_to_reference(reference, cand, eval_batches, job.input_name, threads), seconds)


def _best_method(job: _Int8Job, ranges: dict, methods: Sequence[str], out_name: str,
                 eval_batches: Sequence[np.ndarray], threads: int | None,
                 score_output: str) -> tuple[list[MethodTrial], str, Path]:
    """Every method's trial, the method whose `score_output` error is smallest and its graph."""
    trials: list[MethodTrial] = []
    best: tuple[float, str, Path] | None = None
    reference = reference_outputs(job.fp32_path, eval_batches, job.input_name, threads)  # fp32 once, not per method
    for i, method in enumerate(methods):
        cand = job.work_dir / f"cand{i}" / out_name
        trial = _trial(job, cand, ranges[method], method, eval_batches, reference, threads)
        trials.append(trial)
        score = trial.errors[score_output].rel_max
        log.info("int8 %s: %s rel max %.4f, rel mean %.5f (%.1f s)", method, score_output, score,
                 trial.errors[score_output].rel_mean, trial.seconds)
        if np.isfinite(score) and (best is None or score < best[0]):
            best = (score, method, cand)
    if best is None:
        raise QuantizeError("every calibration method gave non-finite outputs")
    return trials, best[1], best[2]


def _move_into_place(chosen: Path, out_path: Path) -> None:
    """The chosen model and, for large weights, its .data to `out_path` (+ .data)."""
    stale = out_path.with_name(out_path.name + ".data")
    if stale.exists():
        stale.unlink()
    for f in chosen.parent.iterdir():
        if f.name.startswith(chosen.name):
            f.replace(out_path.parent / (out_path.name + f.name[len(chosen.name):]))
    for f in (out_path, stale):
        if f.exists():
            f.chmod(0o644)  # a service may run as another user


def quantize_model(
    fp32_path: str | Path,
    out_path: str | Path,
    calibration_batches: Sequence[np.ndarray],
    input_name: str = "image",
    *,
    methods: Sequence[str] = CALIBRATION_METHODS,
    eval_batches: Sequence[np.ndarray] | None = None,
    score_output: str | None = None,
    keep_heads_fp32: bool = True,
    nodes_to_exclude: Sequence[str] = (),
    per_channel: bool = True,
    threads: int | None = None,
    op_types: Sequence[str] = DEFAULT_OP_TYPES,
) -> QuantizeResult:
    """Static int8 QDQ copy of `fp32_path` at `out_path` (weights to `<out>.data` when large).

    Each calibration method in `methods` is tried; the one with the smallest relative
    max error of `score_output` (default: the first graph output, SEAM's `cam`) on
    `eval_batches` (default: the calibration batches) is kept. Only `op_types` nodes are
    quantized (Conv and ReLU); see the module docstring for what stays fp32."""
    fp32_path, out_path = Path(fp32_path), Path(out_path)
    score_output, external, unnamed = _check_quantize_inputs(fp32_path, calibration_batches, input_name, methods,
                                                             score_output)
    eval_batches = list(eval_batches) if eval_batches is not None else list(calibration_batches)
    with tempfile.TemporaryDirectory(prefix="seam-quant-", dir=out_path.parent) as tmp_dir:
        tmp = Path(tmp_dir)
        src = _named_copy(fp32_path, tmp, external) if unnamed else fp32_path
        nodes, quantized, fp32_convs = _select_nodes(src, op_types, keep_heads_fp32, nodes_to_exclude)
        if not quantized:
            raise QuantizeError(f"{fp32_path.name}: no convolution left to quantize")
        job = _Int8Job(fp32_path, src, tmp, input_name, nodes, op_types, per_channel, external)
        ranges, calibration_seconds = _calibrate_timed(job, calibration_batches, methods)
        trials, method, chosen = _best_method(job, ranges, methods, out_path.name, eval_batches, threads,
                                              score_output)
        _move_into_place(chosen, out_path)
    return QuantizeResult(out_path, method, trials, quantized, fp32_convs,
                          len(calibration_batches), len(eval_batches), score_output,
                          {"calibration_seconds": round(calibration_seconds, 2)})
