"""fp16 copies of an exported graph for GPU providers: onnxruntime's own float16 converter
(`onnxruntime.transformers.float16`, the same code as onnxconverter-common), inputs and
outputs kept fp32, the nodes after the head convolutions kept fp32 for the reasons the
int8 copy keeps them (`int8.py`)."""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import onnx
from seam.training.export.graph_edits import QuantizeError, downstream_nodes, ensure_node_names, head_convs, save_model


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
    ensure_node_names(model)
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
