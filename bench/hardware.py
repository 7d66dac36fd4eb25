"""How far a network pass is from this machine's arithmetic peak (issue 14, item 7).

- `conv_macs`: multiply-accumulates of every Conv/MatMul/Gemm in an ONNX graph at one
  input shape, from the graph's own shapes (onnx shape inference with the input's
  dims fixed): N * C_out * H_out * W_out * (C_in / groups) * kH * kW per Conv.
- `matmul_peak`: a large square matrix product timed on this machine in this
  process: numpy (its BLAS), onnxruntime's fp32 MatMul and u8 x s8 MatMulInteger
  (MLAS: the same kernels behind onnxruntime's Conv and QLinearConv).

GMAC/s = MACs / seconds; a GEMM of n x n by n x n is n^3 MACs (2 n^3 FLOP).
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper, shape_inference


def conv_macs(onnx_path: str | Path, input_shape: tuple[int, ...]) -> int:
    """MACs of one pass of a single-input graph at `input_shape` (weights not loaded)."""
    m = onnx.load(str(onnx_path), load_external_data=False)
    dims = m.graph.input[0].type.tensor_type.shape.dim
    for d, v in zip(dims, input_shape, strict=False):
        d.ClearField("dim_param")
        d.dim_value = int(v)
    m = shape_inference.infer_shapes(m, data_prop=True)
    shapes: dict[str, list[int]] = {}
    for v in [*m.graph.value_info, *m.graph.output, *m.graph.input]:
        shapes[v.name] = [d.dim_value for d in v.type.tensor_type.shape.dim]
    for t in m.graph.initializer:
        shapes[t.name] = list(t.dims)
    total = 0
    for n in m.graph.node:
        if n.op_type in ("Conv", "QLinearConv"):
            w = shapes.get(n.input[3 if n.op_type == "QLinearConv" else 1])
            y = shapes.get(n.output[0])
            if not w or not y or 0 in y:
                raise ValueError(f"{n.name}: shape not inferred (weights {w}, output {y})")
            # weights (C_out, C_in / group, kH, kW): each output element costs prod(w[1:]) MACs
            total += int(np.prod(y)) * int(np.prod(w[1:]))
        elif n.op_type in ("MatMul", "Gemm"):
            a, y = shapes.get(n.input[0]), shapes.get(n.output[0])
            if a and y and 0 not in a and 0 not in y:
                total += int(np.prod(y)) * a[-1]
    return total


def _ort_session(model: onnx.ModelProto, threads: int):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])


def _best(fn, reps: int) -> float:
    fn()
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def _matmul_session(op: str, a_type: int, y_type: int, b: np.ndarray, threads: int):
    """onnxruntime session of one n x n `op` node: `a` (input) times the constant `b`."""
    n = b.shape[0]
    x = helper.make_tensor_value_info("a", a_type, [n, n])
    y = helper.make_tensor_value_info("y", y_type, [n, n])
    g = helper.make_graph([helper.make_node(op, ["a", "b"], ["y"])], op.lower(), [x], [y],
                          [numpy_helper.from_array(b, "b")])
    return _ort_session(helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)], ir_version=10), threads)


def matmul_peak(threads: int, n: int = 2048, reps: int = 5) -> dict[str, float]:
    """Best-of-`reps` GMAC/s of an n x n x n product: numpy sgemm, onnxruntime fp32
    MatMul, onnxruntime u8 x s8 MatMulInteger. Best-of because other load only slows."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    macs = float(n) ** 3
    out = {"numpy_sgemm": macs / _best(lambda: a @ b, reps) / 1e9}
    sess = _matmul_session("MatMul", TensorProto.FLOAT, TensorProto.FLOAT, b, threads)
    out["ort_fp32_matmul"] = macs / _best(lambda: sess.run(None, {"a": a}), reps) / 1e9
    a8 = rng.integers(0, 256, (n, n), dtype=np.uint8)
    b8 = rng.integers(-128, 128, (n, n), dtype=np.int8)
    sess8 = _matmul_session("MatMulInteger", TensorProto.UINT8, TensorProto.INT32, b8, threads)
    out["ort_u8s8_matmul"] = macs / _best(lambda: sess8.run(None, {"a": a8}), reps) / 1e9
    return out


def time_network(onnx_path: str | Path, inputs: list[np.ndarray], threads: int, reps: int = 2) -> float:
    """Seconds for one run over every input (each input's best of `reps` after a warm-up),
    with the engine's session settings: the network alone, no pre/post-processing."""
    from seam.modelrepo.runtime import cpu_session

    sess = cpu_session(onnx_path, threads)
    name = sess.get_inputs()[0].name
    total = 0.0
    for x in inputs:
        total += _best(lambda x=x: sess.run(None, {name: x}), reps)
    return total


def report(label: str, macs: float, seconds: float, peak: float) -> str:
    gmacs = macs / seconds / 1e9
    share = 100 * gmacs / peak
    return f"{label}: {macs / 1e9:.1f} GMAC in {seconds:.2f} s = {gmacs:.1f} GMAC/s ({share:.0f} % of peak)"
