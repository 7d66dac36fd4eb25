"""Lower-precision copies of an exported graph: static int8 (QDQ) for CPUs, fp16 for GPUs.

int8: onnxruntime's static quantization in QDQ form, weights per output channel,
activations calibrated on the user's own images preprocessed exactly as inference
preprocesses them (bicubic rescale to each manifest scale, `Normalization`). Several
calibration methods are tried and the one whose outputs are closest to the fp32
graph's on held-out images is kept: the choice is measured, not assumed.

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
fp16: onnxruntime's own float16 converter (`onnxruntime.transformers.float16`, the same
code as onnxconverter-common), inputs and outputs kept fp32, the nodes after the
heads kept fp32 for the same reasons as above.
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import random
import shutil
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import onnx

from seam.common.cam import working_size
from seam.common.files import file_sha256, list_images
from seam.common.image import Normalization, load_rgb, resize_rgb, scaled_size
from seam.modelrepo.precision import PRECISIONS

if TYPE_CHECKING:
    from seam.modelrepo.manifest import Manifest
    from seam.modelrepo.precision import PrecisionInfo

log = logging.getLogger(__name__)

CALIBRATION_METHODS: tuple[str, ...] = ("minmax", "entropy", "percentile")
DEFAULT_CALIBRATION_N = 48  # demo model: mIoU -0.33 with 48 images, -0.58 with 16 (docs/models.md)
# Conv carries the arithmetic. Quantizing the ReLUs too lets the quantizer drop them into
# the convolution's output range (u8 from 0), so onnxruntime chains QLinearConv ->
# QLinearConv without a dequantize/requantize pair between them: ResNet-38 3.0x instead
# of 2.65x, and a smaller CAM error. Adding the residual Adds (QLinearAdd) was slower and
# less accurate (bench/quantize.py --op-types; numbers in docs/models.md).
DEFAULT_OP_TYPES: tuple[str, ...] = ("Conv", "Relu")
DEFAULT_CALIBRATION_SIDE = 512  # long side of calibration inputs after scaling (memory, time)
EXTERNAL_DATA_BYTES = 100 << 20  # weights above this go to <file>.data, fp32 export (ResNet-38: 421 MB) included


class QuantizeError(RuntimeError):
    """The graph could not be quantized/converted, or the result is unusable."""


# --------------------------------------------------------------------------- calibration data


def calibration_paths(source: str | Path, n: int | None = DEFAULT_CALIBRATION_N, seed: int = 0) -> list[Path]:
    """Images for calibration from a directory or a list file (`seam.common.files.list_images`).

    With `n` below the number available, a seeded random sample (lists are often
    sorted by class or date, so the first n would be a biased set)."""
    items = [p for _, p in list_images(source)]
    if n is not None:
        if n < 1:
            raise QuantizeError("--calibration-n must be >= 1")
        if n < len(items):
            items = sorted(random.Random(seed).sample(items, n))
    return items


def preprocess(rgb: np.ndarray, scale: float, norm: Normalization, working_side: int | None = None,
               max_side: int | None = None) -> np.ndarray:
    """One network input (1, 3, h, w) float32, as the engine builds it for one scale: the
    long side capped at the model's working side, bicubic rescale by `scale`,
    normalisation. `max_side` additionally caps the scaled input (calibration memory)."""
    rgb = resize_rgb(rgb, working_size(rgb.shape[:2], working_side))
    size = working_size(scaled_size(rgb.shape[:2], scale), max_side)
    return norm(resize_rgb(rgb, size))[None]


def calibration_batches(
    paths: Sequence[str | Path],
    mean: Sequence[float],
    std: Sequence[float],
    scales: Sequence[float] = (1.0,),
    max_side: int | None = DEFAULT_CALIBRATION_SIDE,
    working_side: int | None = None,
) -> list[np.ndarray]:
    """Each image at each scale as one (1, 3, h, w) batch (sizes differ: no padding).

    `max_side` bounds the calibration pass's memory: the histogram methods see every
    convolution's full output at once (ResNet-38: ~4 kB per input pixel)."""
    norm = Normalization(tuple(mean), tuple(std))  # type: ignore[arg-type]
    out = []
    for p in paths:
        rgb = load_rgb(p)
        out.extend(preprocess(rgb, s, norm, working_side, max_side) for s in scales)
    if not out:
        raise QuantizeError("no calibration images")
    return out


class _Reader:
    """onnxruntime CalibrationDataReader over in-memory batches, for running onnxruntime's
    own calibrators (the tests compare `calibrate` with them). `set_range` feeds them one
    batch at a time, as `quantize_static`'s `CalibStridedMinMax` does: in one call the
    histogram calibrators keep every intermediate tensor of every batch in memory and
    cannot stack inputs of different sizes."""

    def __init__(self, batches: Sequence[np.ndarray], input_name: str) -> None:
        self.batches = list(batches)
        self.input_name = input_name
        self.set_range(0, len(self.batches))

    def __len__(self) -> int:
        return len(self.batches)

    def set_range(self, start_index: int, end_index: int) -> None:
        self._it = iter(self.batches[start_index:end_index])

    def get_next(self) -> dict[str, np.ndarray] | None:
        x = next(self._it, None)
        return None if x is None else {self.input_name: x}


# --------------------------------------------------------------------------- graph helpers


def _consumers(graph: onnx.GraphProto) -> dict[str, list[onnx.NodeProto]]:
    out: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for t in node.input:
            out.setdefault(t, []).append(node)
    return out


def head_convs(model: onnx.ModelProto) -> list[str]:
    """Names of the last Conv node on the way to each graph output (walking producers
    backwards through non-Conv nodes)."""
    producer = {t: n for n in model.graph.node for t in n.output}
    inits = {i.name for i in model.graph.initializer}
    heads: list[str] = []
    seen: set[str] = set()
    stack = [o.name for o in model.graph.output]
    while stack:
        t = stack.pop()
        n = producer.get(t)
        if n is None or n.name in seen:
            continue
        seen.add(n.name)
        if n.op_type == "Conv":
            if n.name not in heads:
                heads.append(n.name)
            continue
        stack.extend(i for i in n.input if i and i not in inits)
    return heads


def downstream_nodes(model: onnx.ModelProto, node_names: Iterable[str]) -> list[str]:
    """Names of every node fed (directly or not) by the outputs of `node_names`, excluded."""
    cons = _consumers(model.graph)
    by_name = {n.name: n for n in model.graph.node}
    start = [by_name[n] for n in node_names if n in by_name]
    seen: set[str] = set()
    stack = [t for n in start for t in n.output]
    while stack:
        for n in cons.get(stack.pop(), []):
            if n.name not in seen:
                seen.add(n.name)
                stack.extend(n.output)
    return [n.name for n in model.graph.node if n.name in seen]


def conv_nodes(model: onnx.ModelProto) -> list[str]:
    return [n.name for n in model.graph.node if n.op_type == "Conv"]


def _ensure_node_names(model: onnx.ModelProto) -> None:
    """nodes_to_exclude works by name: give anonymous nodes a stable one."""
    for i, n in enumerate(model.graph.node):
        if not n.name:
            n.name = f"{n.op_type}_{i}"


def _weights_bytes(model: onnx.ModelProto) -> int:
    total = 0
    for t in model.graph.initializer:
        n = int(np.prod(t.dims)) if t.dims else 1
        total += n * onnx.helper.tensor_dtype_to_np_dtype(t.data_type).itemsize
    return total


def save_model(model: onnx.ModelProto, path: str | Path, external: bool | None = None) -> None:
    """Save like the fp32 export: weights over EXTERNAL_DATA_BYTES go to `<name>.data`."""
    path = Path(path)
    if external is None:
        external = _weights_bytes(model) > EXTERNAL_DATA_BYTES
    data = path.with_name(path.name + ".data")
    if data.exists():
        data.unlink()
    if external:
        onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                        location=data.name, size_threshold=1024)
    else:
        onnx.save_model(model, str(path))


# --------------------------------------------------------------------------- evaluation


@dataclass(frozen=True)
class OutputError:
    """|low precision - fp32| of one output over the evaluation batches. `rel_*` divide by the
    fp32 output's largest |value| in the same batch (CAMs have arbitrary scale)."""

    max_abs: float
    rel_max: float
    rel_mean: float


def compare_outputs(
    ref_path: str | Path,
    test_path: str | Path,
    batches: Sequence[np.ndarray],
    input_name: str,
    threads: int | None = None,
) -> dict[str, OutputError]:
    """Per output: the difference between two graphs on the same inputs (engine session
    settings, so the int8 graph is measured as it will run, QDQ fused into QLinearConv)."""
    return _compare_to(reference_outputs(ref_path, batches, input_name, threads), test_path, batches, input_name,
                       threads)


def reference_outputs(path: str | Path, batches: Sequence[np.ndarray], input_name: str,
                      threads: int | None = None) -> dict[str, list[np.ndarray]]:
    """{output name: its value for each batch} of the graph at `path` (engine CPU session):
    computed once, compared with every candidate."""
    from seam.modelrepo.runtime import cpu_session

    sess = cpu_session(path, threads)
    names = [o.name for o in sess.get_outputs()]
    runs = [sess.run(names, {input_name: x}) for x in batches]
    return {n: [r[i] for r in runs] for i, n in enumerate(names)}


def _compare_to(reference: dict[str, list[np.ndarray]], test_path: str | Path, batches: Sequence[np.ndarray],
                input_name: str, threads: int | None) -> dict[str, OutputError]:
    """`compare_outputs` against precomputed reference outputs."""
    from seam.modelrepo.runtime import cpu_session

    test = cpu_session(test_path, threads)
    names = list(reference)
    acc: dict[str, list[tuple[float, float, float]]] = {n: [] for n in names}
    for k, x in enumerate(batches):
        a = [reference[n][k] for n in names]
        b = test.run(names, {input_name: x})
        for n, r, t in zip(names, a, b, strict=True):
            r = r.astype(np.float64)
            d = np.abs(t.astype(np.float64) - r)
            scale = float(np.abs(r).max()) or 1.0
            acc[n].append((float(d.max()), float(d.max()) / scale, float(d.mean()) / scale))
    return {
        n: OutputError(max(v[0] for v in vals), max(v[1] for v in vals), float(np.mean([v[2] for v in vals])))
        for n, vals in acc.items()
    }


# --------------------------------------------------------------------------- int8


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


def calibrate(
    src: Path,
    batches: Sequence[np.ndarray],
    input_name: str,
    methods: Sequence[str],
    work_dir: Path,
    external: bool,
    op_types: Sequence[str] = ("Conv",),
) -> dict:
    """Ranges of the inputs/outputs of every `op_types` node for each method, from ONE pass over the
    batches: the histogram calibrator's augmented graph exposes the full tensors, which
    feed a running min/max (MinMax) and onnxruntime's own histogram collectors (Entropy,
    Percentile, with the defaults `quantize_static` uses). Three separate calibrations
    would run the network three times. One batch's tensors are in memory at a time.
    Returns {method: onnxruntime TensorsData}."""
    from onnxruntime.quantization.calibrate import (
        CalibrationMethod,
        HistogramCollector,
        TensorsData,
        create_calibrator,
    )

    cal = create_calibrator(src, list(op_types), augmented_model_path=str(work_dir / "augmented.onnx"),
                            calibrate_method=CalibrationMethod.Entropy, use_external_data_format=external)
    names = [o.name for o in cal.infer_session.get_outputs()]
    wanted = set(cal.tensors_to_calibrate)
    collectors = {
        "entropy": HistogramCollector("entropy", False, 128, 128, 99.999, "same"),
        "percentile": HistogramCollector("percentile", True, 2048, 128, 99.999, "same"),
    }
    lo: dict[str, np.ndarray] = {}
    hi: dict[str, np.ndarray] = {}
    with contextlib.redirect_stdout(io.StringIO()):  # the collectors print progress lines
        for x in batches:
            outs = dict(zip(names, cal.infer_session.run(None, {input_name: x}), strict=True))
            tensors = {n: a for n, a in outs.items() if n in wanted}
            for n, a in tensors.items():
                amin, amax = np.nanmin(a), np.nanmax(a)
                lo[n] = np.minimum(lo[n], amin) if n in lo else amin
                hi[n] = np.maximum(hi[n], amax) if n in hi else amax
            for m in methods:
                if m in collectors:
                    collectors[m].collect(tensors)
            del outs, tensors
        ranges = {}
        for m in methods:
            if m == "minmax":
                # shaped (1,) as MinMaxCalibrater's ReduceMin/ReduceMax outputs
                ranges[m] = TensorsData(CalibrationMethod.MinMax,
                                        {n: (np.reshape(lo[n], 1), np.reshape(hi[n], 1)) for n in lo})
            else:
                cm = CalibrationMethod.Entropy if m == "entropy" else CalibrationMethod.Percentile
                ranges[m] = TensorsData(cm, collectors[m].compute_collection_result())
    del cal
    return ranges


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
    return score_output, _weights_bytes(model) > EXTERNAL_DATA_BYTES, any(not n.name for n in model.graph.node)


def _named_copy(fp32_path: Path, work_dir: Path, external: bool) -> Path:
    """A copy whose anonymous nodes have names: quantize_static selects nodes by name."""
    m = onnx.load(str(fp32_path))
    _ensure_node_names(m)
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
    return MethodTrial(method, _compare_to(reference, cand, eval_batches, job.input_name, threads), seconds)


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


# --------------------------------------------------------------------------- fp16


def convert_fp16(
    fp32_path: str | Path,
    out_path: str | Path,
    keep_heads_fp32: bool = True,
    node_block_list: Sequence[str] = (),
) -> list[str]:
    """fp16 copy of a graph for GPU providers; inputs/outputs stay float32 (Casts inside).

    Returns the names of the nodes left in fp32: by default everything after the head
    convolutions (the CAM / embedding normalisations, whose 1e-5 epsilons and max/sum
    reductions are where fp16's 3 significant digits would show)."""
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = onnx.load(str(fp32_path))
    _ensure_node_names(model)
    block = set(node_block_list)
    if keep_heads_fp32:
        block |= set(downstream_nodes(model, head_convs(model)))
    try:
        half = convert_float_to_float16(model, keep_io_types=True, node_block_list=sorted(block),
                                        disable_shape_infer=False)
    except Exception as exc:
        raise QuantizeError(f"fp16 conversion failed: {exc}") from exc
    _dedupe_and_sort(half)
    save_model(half, out_path)
    return sorted(block)


def _dedupe_and_sort(model: onnx.ModelProto) -> None:
    """The converter adds one Cast per (fp16 tensor, blocked consumer), all with the same
    name and output when two blocked nodes read one tensor, and appends them at the end
    of the node list: keep one of each and restore topological order (onnx.checker's rule)."""
    seen: set[str] = set()
    nodes = []
    for n in model.graph.node:
        key = n.name if n.op_type == "Cast" and n.name.endswith(("_cast_to_fp32_node", "_cast_to_fp16_node")) else None
        if key is not None:
            if key in seen:
                continue
            seen.add(key)
        nodes.append(n)
    vi_seen: set[str] = set()
    infos = []
    for v in model.graph.value_info:
        if v.name not in vi_seen:
            vi_seen.add(v.name)
            infos.append(v)
    del model.graph.value_info[:]
    model.graph.value_info.extend(infos)
    ready = {i.name for i in model.graph.input} | {i.name for i in model.graph.initializer} | {""}
    ordered: list[onnx.NodeProto] = []
    pending = nodes
    while pending:
        rest = []
        for n in pending:
            if all(i in ready for i in n.input):
                ordered.append(n)
                ready.update(n.output)
            else:
                rest.append(n)
        if len(rest) == len(pending):
            raise QuantizeError(f"fp16 graph has a cycle or a missing input at {rest[0].name}")
        pending = rest
    del model.graph.node[:]
    model.graph.node.extend(ordered)


# --------------------------------------------------------------------------- model directories


def fingerprint(paths: Sequence[str | Path]) -> str:
    """sha256 over the images' names and bytes, in the given order."""
    h = hashlib.sha256()
    for p in paths:
        p = Path(p)
        h.update(p.name.encode() + b"\0")
        h.update(bytes.fromhex(file_sha256(p)))
    return h.hexdigest()


def time_pass(path: str | Path, x: np.ndarray, input_name: str, threads: int | None, reps: int = 3) -> float:
    """Fastest of `reps` runs (after one warm-up) in seconds: the least disturbed by other load."""
    from seam.modelrepo.runtime import cpu_session

    sess = cpu_session(path, threads)
    sess.run(None, {input_name: x})
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        sess.run(None, {input_name: x})
        best = min(best, time.perf_counter() - t0)
    return best


def _model_scales(manifest: Manifest) -> tuple[float, ...]:
    if manifest.kind == "seam" and manifest.cam is not None:
        return tuple(manifest.cam.scales)
    if manifest.kind == "deeplab" and manifest.deeplab is not None:
        return tuple(manifest.deeplab.scales)
    return (1.0,)


def _replace_graph(model_dir: Path, new: Path, name: str) -> dict[str, str]:
    """Move `new` (+ its .data) over model_dir/name (+ .data); {external file: sha256}."""
    old_data = model_dir / (name + ".data")
    if old_data.exists():
        old_data.unlink()
    new_data = new.with_name(new.name + ".data")
    new.replace(model_dir / name)
    if new_data.exists():
        new_data.replace(old_data)
        return {old_data.name: file_sha256(old_data)}
    return {}


def check_precision_args(precision: str, calibration: str | Path | None) -> None:
    """Fail before any export work: unknown precision, int8 without (readable) calibration images."""
    if precision not in PRECISIONS:
        raise QuantizeError(f"precision {precision!r}: choose {', '.join(PRECISIONS)}")
    if precision == "int8":
        if calibration is None:
            raise QuantizeError("int8 needs calibration images: --calibration LIST_FILE_OR_DIR "
                                "(e.g. the training list)")
        try:
            calibration_paths(calibration, None)
        except FileNotFoundError as exc:
            raise QuantizeError(f"calibration images: {exc}") from exc
    elif calibration is not None:
        raise QuantizeError(f"--calibration is only used with int8, not {precision}")


def _held_out_split(calibration: str | Path, calibration_n: int, seed: int) -> tuple[list[Path], list[Path]]:
    """(`calibration_n` calibration images, up to 4 more held out to score the methods); with
    too few images to hold any out, the calibration images score too."""
    n_eval = min(4, max(1, calibration_n // 4))
    paths = calibration_paths(calibration, calibration_n + n_eval, seed)
    if len(paths) <= calibration_n:
        return paths, paths
    held = set(random.Random(seed + 1).sample(range(len(paths)), len(paths) - calibration_n))
    return [p for i, p in enumerate(paths) if i not in held], [paths[i] for i in sorted(held)]


def _int8_speedup(fp32: Path, int8: Path, batches: Sequence[np.ndarray], input_name: str, threads: int | None,
                  min_speedup: float | None) -> float:
    """fp32 / int8 time of one pass on the largest batch; refused below `min_speedup`."""
    probe = max(batches, key=lambda x: x.shape[2] * x.shape[3])
    t32 = time_pass(fp32, probe, input_name, threads)
    t8 = time_pass(int8, probe, input_name, threads)
    speedup = t32 / t8
    log.info("int8 vs fp32 on %s: %.3f s vs %.3f s per pass (%.2fx)", probe.shape, t8, t32, speedup)
    if min_speedup is not None and speedup < min_speedup:
        raise QuantizeError(
            f"int8 is not faster than fp32 on this machine ({t8:.3f} s vs {t32:.3f} s per pass, "
            f"{speedup:.2f}x < {min_speedup:g}x): keep the fp32 export")
    return speedup


def _apply_int8(graph: Path, out: Path, manifest: Manifest, calibration: str | Path | None, calibration_n: int,
                threads: int | None, seed: int, max_side: int | None, methods: Sequence[str],
                min_speedup: float | None) -> PrecisionInfo:
    """Quantize `graph` into `out` on the user's images; the manifest's PrecisionInfo for it."""
    from seam.modelrepo.precision import Calibration, PrecisionInfo

    if calibration is None:
        raise QuantizeError("int8 needs calibration images (--calibration LIST_OR_DIR)")
    paths, eval_paths = _held_out_split(calibration, calibration_n, seed)
    norm = Normalization(tuple(manifest.input.mean), tuple(manifest.input.std))
    working_side = getattr(manifest.input, "working_side", None)
    scales = _model_scales(manifest)
    cal = calibration_batches(paths, norm.mean, norm.std, scales, max_side, working_side)
    ev = calibration_batches(eval_paths, norm.mean, norm.std, (1.0,), max_side, working_side)
    input_name = manifest.input.name
    res = quantize_model(graph, out, cal, input_name, methods=methods, eval_batches=ev, threads=threads)
    speedup = _int8_speedup(graph, out, cal, input_name, threads, min_speedup)
    best = next(t for t in res.trials if t.method == res.method)
    return PrecisionInfo(
        weights="int8", provider="cpu", fp32_nodes=tuple(res.excluded_nodes),
        calibration=Calibration(
            source=str(calibration), images=len(paths), fingerprint=fingerprint(paths),
            scales=scales, max_side=max_side, method=res.method,
            method_errors={t.method: round(t.errors[res.score_output].rel_max, 6) for t in res.trials}),
        max_error={k: round(v.rel_max, 6) for k, v in best.errors.items()},
        speedup=round(speedup, 3),
    )


def _apply_fp16(graph: Path, out: Path, input_name: str, threads: int | None, seed: int) -> PrecisionInfo:
    """fp16 copy of `graph` at `out`, its error measured on CPU; the manifest's PrecisionInfo."""
    from seam.modelrepo.precision import PrecisionInfo

    kept = convert_fp16(graph, out)
    probe = np.random.default_rng(seed).standard_normal((1, 3, 67, 93)).astype(np.float32)
    try:
        errors = compare_outputs(graph, out, [probe], input_name, threads)
    except Exception as exc:  # noqa: BLE001 - a CPU build without fp16 kernels for some op
        log.warning("fp16 graph not checked on CPU: %s", exc)
        errors = {}
    return PrecisionInfo(weights="fp16", provider="cuda", fp32_nodes=tuple(kept),
                         max_error={k: round(v.rel_max, 6) for k, v in errors.items()})


def apply_precision(
    model_dir: str | Path,
    manifest: Manifest,
    precision: str,
    calibration: str | Path | None = None,
    calibration_n: int = DEFAULT_CALIBRATION_N,
    threads: int | None = None,
    seed: int = 0,
    max_side: int | None = DEFAULT_CALIBRATION_SIDE,
    methods: Sequence[str] = CALIBRATION_METHODS,
    min_speedup: float | None = None,
) -> Manifest:
    """Turn the fp32 graph of an exported model directory into `precision` in place and
    return the manifest updated to match (new sha256, `precision` section).

    int8 needs `calibration` (list file or directory); `calibration_n` images are drawn
    (seeded) for calibration and up to 4 more, held out, score the methods and time
    int8 against fp32 (on the largest calibration input; recorded as `speedup`). With
    `min_speedup`, int8 that is not that much faster than fp32 on this machine is
    refused. fp16 is meant for CUDA workers; its error is measured on CPU, its speed is
    not (CPUs have no fast fp16)."""
    from seam.modelrepo.manifest import Manifest

    model_dir = Path(model_dir)
    graph = model_dir / manifest.onnx.file
    check_precision_args(precision, calibration)
    if precision == "fp32":
        return manifest
    work = Path(tempfile.mkdtemp(prefix=".precision-", dir=model_dir))
    out = work / manifest.onnx.file
    try:
        if precision == "int8":
            info = _apply_int8(graph, out, manifest, calibration, calibration_n, threads, seed, max_side, methods,
                               min_speedup)
        else:
            info = _apply_fp16(graph, out, manifest.input.name, threads, seed)
        ext = _replace_graph(model_dir, out, manifest.onnx.file)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    data = manifest.model_dump()
    data["onnx"].update(sha256=file_sha256(graph), external_data=ext)
    data["precision"] = info.model_dump()
    return Manifest.model_validate(data)
