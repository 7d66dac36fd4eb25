"""ONNX graph edits the int8 and fp16 copies share (`int8.py`, `fp16.py`): the *head*
convolutions (the last convolution before each graph output) and the nodes after them,
which both keep in fp32; stable node names (onnxruntime selects nodes by name); saving
with the weights in `<file>.data` when large, as the fp32 export does."""
from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np
import onnx

EXTERNAL_DATA_BYTES = 100 << 20  # weights above this go to <file>.data, fp32 export (ResNet-38: 421 MB) included


class QuantizeError(RuntimeError):
    """The graph could not be quantized/converted, or the result is unusable."""


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


def ensure_node_names(model: onnx.ModelProto) -> None:
    """nodes_to_exclude works by name: give anonymous nodes a stable one."""
    for i, n in enumerate(model.graph.node):
        if not n.name:
            n.name = f"{n.op_type}_{i}"


def weights_bytes(model: onnx.ModelProto) -> int:
    total = 0
    for t in model.graph.initializer:
        n = int(np.prod(t.dims)) if t.dims else 1
        total += n * onnx.helper.tensor_dtype_to_np_dtype(t.data_type).itemsize
    return total


def save_model(model: onnx.ModelProto, path: str | Path, external: bool | None = None) -> None:
    """Save like the fp32 export: weights over EXTERNAL_DATA_BYTES go to `<name>.data`."""
    path = Path(path)
    if external is None:
        external = weights_bytes(model) > EXTERNAL_DATA_BYTES
    data = path.with_name(path.name + ".data")
    if data.exists():
        data.unlink()
    if external:
        onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                        location=data.name, size_threshold=1024)
    else:
        onnx.save_model(model, str(path))
