"""Small hand-built ONNX models with the exported models' interface (image -> stride-8 maps,
the PCM column block in plain ONNX ops) and their manifests: stand-ins for trained networks in
torch-free tests (tests/service/engine/, tests/test_no_torch.py)."""
from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from seam.modelrepo.manifest import (
    KIND_OUTPUTS,
    PCM_INPUTS,
    PCM_OUTPUTS,
    CamSettings,
    DeepLabSettings,
    Manifest,
    OnnxFile,
    PcmGraphFile,
    Provenance,
    RandomWalkSettings,
    file_sha256,
)

FG = ["cat", "dog", "bird"]
CLASSES = ["background", *FG]
PCM_DIM = 6  # channels of the fake PCM embedding


def stride8_graph(outputs: dict[str, int], seed: int = 0) -> onnx.ModelProto:
    """image (B, 3, H, W) -> three 3x3 stride-2 convs (ResNet-38's output size) -> one
    1x1 conv per output (B, C, ceil-ish H/8, W/8). Deterministic random weights."""
    rng = np.random.default_rng(seed)
    inits, nodes = [], []

    def conv(name: str, x: str, cin: int, cout: int, k: int, stride: int) -> str:
        w = (rng.standard_normal((cout, cin, k, k)) / np.sqrt(cin * k * k)).astype(np.float32)
        inits.append(numpy_helper.from_array(w, f"{name}_w"))
        nodes.append(helper.make_node("Conv", [x, f"{name}_w"], [name], kernel_shape=[k, k],
                                      strides=[stride, stride], pads=[k // 2] * 4))
        return name

    x = "image"
    cin = 3
    for i in range(3):
        x = conv(f"c{i}", x, cin, 8, 3, 2)
        nodes.append(helper.make_node("Relu", [x], [f"r{i}"]))
        x, cin = f"r{i}", 8
    outs = []
    for name, c in outputs.items():
        conv(f"{name}_pre", x, 8, c, 1, 1)
        nodes.append(helper.make_node("Relu" if name == "pcm_n" else "Identity", [f"{name}_pre"], [name]))
        outs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, ["batch", c, "h8", "w8"]))
    graph = helper.make_graph(
        nodes, "fake", [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 3, "height", "width"])],
        outs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 10
    return model


def pcm_graph() -> onnx.ModelProto:
    """The PCM column block written with plain ONNX ops (an independent transcription of
    the release: relu(g^T q), column sums, n @ A / (sum + 1e-5))."""
    f = TensorProto.FLOAT
    ins = [helper.make_tensor_value_info(n, f, ["b", c, px]) for n, c, px in
           zip(PCM_INPUTS, ("c", "d", "d"), ("n", "n", "m"), strict=True)]
    nodes = [
        helper.make_node("Transpose", ["pcm_g"], ["gt"], perm=[0, 2, 1]),
        helper.make_node("MatMul", ["gt", "pcm_q"], ["a"]),
        helper.make_node("Relu", ["a"], ["ar"]),
        helper.make_node("MatMul", ["pcm_n", "ar"], ["num"]),
        helper.make_node("ReduceSum", ["ar", "axis1"], ["colsum"], keepdims=1),
        helper.make_node("Add", ["colsum", "eps"], ["den"]),
        helper.make_node("Div", ["num", "den"], ["cam_rv"]),
    ]
    inits = [numpy_helper.from_array(np.array([1], np.int64), "axis1"),
             numpy_helper.from_array(np.array(1e-5, np.float32), "eps")]
    graph = helper.make_graph(nodes, "pcm", ins, [helper.make_tensor_value_info(PCM_OUTPUTS[0], f, ["b", "c", "m"])],
                              inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 10
    return model


def write_model(root: Path, name: str, kind: str = "seam", classes: list[str] = CLASSES, seed: int = 0,
                **settings) -> Path:
    d = root / name
    d.mkdir(parents=True)
    n_out = {"seam": len(classes), "deeplab": len(classes), "affinity": 16}[kind]
    widths = {o: PCM_DIM if o == "pcm_g" else n_out for o in KIND_OUTPUTS[kind]}
    onnx.save(stride8_graph(widths, seed), str(d / "model.onnx"))
    if kind == "seam":
        onnx.save(pcm_graph(), str(d / "pcm.onnx"))
        settings.setdefault("pcm", PcmGraphFile(sha256=file_sha256(d / "pcm.onnx")))
    defaults = {"seam": {"cam": CamSettings(scales=(0.5, 1.0), flip=True)},
                "affinity": {"random_walk": RandomWalkSettings(logt=3)},
                "deeplab": {"deeplab": DeepLabSettings(scales=(1.0, 0.75), flip=True)}}[kind]
    m = Manifest(
        name=name, kind=kind, backbone="fake", class_names=tuple(classes if kind != "affinity" else ()),
        onnx=OnnxFile(sha256=file_sha256(d / "model.onnx"), ir_version=10, opset=18, outputs=KIND_OUTPUTS[kind]),
        provenance=Provenance(checkpoint="fake.pth", checkpoint_sha256="0" * 64, created=datetime.now(UTC),
                              torch_version="-", onnx_version=onnx.__version__, exporter="test"),
        **{**defaults, **settings},
    )
    (d / "manifest.json").write_text(m.to_json())
    return d
