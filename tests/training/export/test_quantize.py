"""int8 / fp16 copies of exported graphs (training/export/: calibration, graph_edits, int8, fp16,
model_dir): the calibration data is the engine's preprocessing, one calibration pass gives what onnxruntime's own
calibrators give, the kept method is the measured best, heads and normalisations stay
fp32, and the fp16 graph is valid, fp32 at its edges and close to fp32."""
from __future__ import annotations

import json
import shutil

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from PIL import Image
from seam.training.export import calibration as C
from seam.training.export import compare, fp16, int8, model_dir
from seam.training.export import graph_edits as G

from bench.hardware import conv_macs
from seam.common.image import Normalization
from seam.modelrepo.precision import PrecisionInfo

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def tiny_graph(path, seed: int = 0) -> None:
    """image -> conv3x3+relu -> conv3x3/2+relu -> conv1x1 + residual -> relu -> head conv1x1
    -> `cam`; `cam_n` = relu(cam) / (its spatial max + 1e-5) (a normalisation after the head)."""
    rng = np.random.default_rng(seed)

    def w(name, shape):
        return numpy_helper.from_array((rng.standard_normal(shape) * (2.0 / np.prod(shape[1:])) ** 0.5)
                                       .astype(np.float32), name)

    inits = [w("w1", (8, 3, 3, 3)), w("w2", (16, 8, 3, 3)), w("w3", (16, 16, 1, 1)), w("wh", (4, 16, 1, 1)),
             numpy_helper.from_array(np.zeros(16, np.float32), "b2"),
             numpy_helper.from_array(np.array(1e-5, np.float32), "eps"),
             numpy_helper.from_array(np.array([2, 3], np.int64), "axes")]
    nodes = [
        helper.make_node("Conv", ["image", "w1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], name="conv2", pads=[1, 1, 1, 1], strides=[2, 2]),
        helper.make_node("Relu", ["c2"], ["r2"], name="relu2"),
        helper.make_node("Conv", ["r2", "w3"], ["c3"], name="conv3"),
        helper.make_node("Add", ["c3", "r2"], ["a3"], name="add3"),
        helper.make_node("Relu", ["a3"], ["r3"], name="relu3"),
        helper.make_node("Conv", ["r3", "wh"], ["cam"], name="head"),
        helper.make_node("Relu", ["cam"], ["cam_pos"], name="relu_n"),
        helper.make_node("ReduceMax", ["cam_pos", "axes"], ["peak"], name="peak", keepdims=1),
        helper.make_node("Add", ["peak", "eps"], ["peak_e"], name="peak_eps"),
        helper.make_node("Div", ["cam_pos", "peak_e"], ["cam_n"], name="norm"),
    ]
    g = helper.make_graph(
        nodes, "tiny",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 3, "height", "width"])],
        [helper.make_tensor_value_info("cam", TensorProto.FLOAT, ["batch", 4, "h2", "w2"]),
         helper.make_tensor_value_info("cam_n", TensorProto.FLOAT, ["batch", 4, "h2", "w2"])],
        inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)], ir_version=10)
    onnx.checker.check_model(m)
    onnx.save(m, str(path))


def photos(d, n: int = 6, seed: int = 0) -> list:
    """Small smooth RGB images (blobs on gradients), saved as PNG."""
    rng = np.random.default_rng(seed)
    d.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(n):
        h, w = int(rng.integers(40, 70)), int(rng.integers(40, 70))
        yy, xx = np.mgrid[0:h, 0:w]
        img = np.stack([xx * 255 // w, yy * 255 // h, np.full_like(xx, 90)], -1).astype(np.float64)
        cy, cx, r = rng.integers(0, h), rng.integers(0, w), rng.integers(6, 20)
        img[(yy - cy) ** 2 + (xx - cx) ** 2 < r * r] = rng.integers(0, 256, 3)
        p = d / f"im_{i:02d}.png"
        Image.fromarray(img.astype(np.uint8)).save(p)
        out.append(p)
    return out


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    d = tmp_path_factory.mktemp("quant")
    tiny_graph(d / "model.onnx")
    paths = photos(d / "images")
    cal = C.calibration_batches(paths[:4], MEAN, STD, scales=(0.5, 1.0))
    ev = C.calibration_batches(paths[4:], MEAN, STD, scales=(1.0,))
    return d, paths, cal, ev


def test_calibration_paths_sample_is_seeded_subset(tmp_path):
    paths = photos(tmp_path / "imgs", n=6)
    lst = tmp_path / "list.txt"
    lst.write_text("\n".join(f"imgs/{p.name}" for p in paths) + "\n")
    a = C.calibration_paths(tmp_path / "imgs", 3, seed=1)
    b = C.calibration_paths(tmp_path / "imgs", 3, seed=1)
    assert a == b and len(set(a)) == 3 and set(a) <= set(paths) and a == sorted(a)
    assert C.calibration_paths(lst, None) == paths  # a list file: every entry, in order
    assert len(C.calibration_paths(tmp_path / "imgs", 100)) == 6  # fewer available: all of them
    with pytest.raises(G.QuantizeError, match=">= 1"):
        C.calibration_paths(tmp_path / "imgs", 0)


def test_preprocess_is_the_engines(tmp_path):
    """working side cap, then bicubic rescale (Python rounding), then (x/255 - mean)/std:
    written out independently with PIL and numpy."""
    rgb = np.random.default_rng(0).integers(0, 256, (50, 80, 3), dtype=np.uint8)
    got = C.preprocess(rgb, 1.5, Normalization(MEAN, STD), working_side=64)
    capped = Image.fromarray(rgb).resize((64, 40), Image.BICUBIC)  # 80 -> 64, 50 -> 40
    scaled = np.asarray(capped.resize((96, 60), Image.BICUBIC), np.float32)  # round(64*1.5), round(40*1.5)
    ref = ((scaled / 255 - np.float32(MEAN)) / np.float32(STD)).transpose(2, 0, 1)[None]
    assert got.shape == (1, 3, 60, 96) and got.dtype == np.float32
    np.testing.assert_allclose(got, ref, atol=1e-6)
    # the calibration cap applies after the scale
    assert C.preprocess(rgb, 2.0, Normalization(MEAN, STD), max_side=100).shape == (1, 3, 62, 100)


def test_graph_helpers(tiny):
    d, *_ = tiny
    m = onnx.load(str(d / "model.onnx"))
    assert G.head_convs(m) == ["head"]
    assert G.downstream_nodes(m, ["head"]) == ["relu_n", "peak", "peak_eps", "norm"]
    assert G.conv_nodes(m) == ["conv1", "conv2", "conv3", "head"]


def test_one_pass_calibration_equals_onnxruntime_calibrators(tiny, tmp_path):
    """Our single pass feeds the same tensors to the same collectors: ranges must equal
    those of onnxruntime's MinMax / Entropy / Percentile calibrators run separately."""
    from onnxruntime.quantization.calibrate import CalibrationMethod, create_calibrator

    d, _, cal, _ = tiny
    ours = C.calibrate(d / "model.onnx", cal, "image", C.CALIBRATION_METHODS, tmp_path, False, ("Conv", "Relu"))
    for name, cm in (("minmax", CalibrationMethod.MinMax), ("entropy", CalibrationMethod.Entropy),
                     ("percentile", CalibrationMethod.Percentile)):
        sub = tmp_path / name
        sub.mkdir()
        c = create_calibrator(d / "model.onnx", ["Conv", "Relu"], augmented_model_path=str(sub / "aug.onnx"),
                              calibrate_method=cm)
        reader = C._Reader(cal, "image")
        for i in range(len(cal)):  # batch by batch, as quantize_static's CalibStridedMinMax=1
            reader.set_range(i, i + 1)
            c.collect_data(reader)
        ref = c.compute_data()
        assert set(ref.keys()) == set(ours[name].keys())
        for k in ref:
            np.testing.assert_allclose(np.asarray(ours[name][k].range_value, np.float64),
                                       np.asarray(ref[k].range_value, np.float64), rtol=1e-6, atol=1e-7,
                                       err_msg=f"{name} {k}")


def _initializer_types(path) -> dict[str, int]:
    m = onnx.load(str(path))
    return {t.name: t.data_type for t in m.graph.initializer}


def test_quantize_keeps_the_measured_best_and_heads_fp32(tiny, tmp_path):
    d, _, cal, ev = tiny
    out = tmp_path / "model.onnx"
    res = int8.quantize_model(d / "model.onnx", out, cal, "image", eval_batches=ev, threads=1)
    # the kept method is the one with the smallest relative max error of `cam`
    scores = {t.method: t.errors["cam"].rel_max for t in res.trials}
    assert [t.method for t in res.trials] == list(C.CALIBRATION_METHODS)
    assert res.method == min(scores, key=scores.get)
    # recompute the kept graph's error independently (plain sessions, numpy)
    import onnxruntime as ort

    a = ort.InferenceSession(str(d / "model.onnx"), providers=["CPUExecutionProvider"])
    b = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    rel = max(float(np.abs(b.run(["cam"], {"image": x})[0] - (r := a.run(["cam"], {"image": x})[0])).max()
                    / np.abs(r).max()) for x in ev)
    assert rel == pytest.approx(scores[res.method], rel=1e-3, abs=1e-6)
    assert 0 < rel < 0.1  # 8 bits: close, not identical
    # what is int8 and what stays fp32
    m = onnx.load(str(out))
    types = _initializer_types(out)
    assert types["w1_quantized"] == TensorProto.INT8 and types["w2_quantized"] == TensorProto.INT8
    assert types["wh"] == TensorProto.FLOAT and "wh_quantized" not in types  # the head
    ops = [n.op_type for n in m.graph.node]
    assert ops.count("QuantizeLinear") >= 3 and ops.count("DequantizeLinear") >= 6
    head = next(n for n in m.graph.node if n.name == "head")
    producer = {o: n for n in m.graph.node for o in n.output}
    assert head.input[1] == "wh"  # its weights are not dequantized int8
    assert producer["cam"].name == "head" and producer["cam_n"].op_type == "Div"
    assert res.excluded_nodes == ["head"] and set(res.quantized_nodes) == {"conv1", "conv2", "conv3"}
    # the ReLU after the head is not quantized (its input stays the fp32 cam)
    relu_n = next(n for n in m.graph.node if n.name == "relu_n")
    assert relu_n.input[0] == "cam"
    json.dumps(res.as_dict())  # JSON-able summary
    # per-channel weights: one scale per output channel of conv2
    scales = {t.name: numpy_helper.to_array(t) for t in m.graph.initializer}
    assert scales["w2_scale"].shape == (16,)


def test_compare_outputs_against_known_difference(tiny, tmp_path):
    """A copy of the graph with cam scaled by 1.01 differs by exactly 1 % of max |cam|."""
    d, _, _, ev = tiny
    m = onnx.load(str(d / "model.onnx"))
    head = next(n for n in m.graph.node if n.name == "head")
    head.output[0] = "cam_raw"
    m.graph.initializer.append(numpy_helper.from_array(np.array(1.01, np.float32), "k"))
    m.graph.node.insert(list(m.graph.node).index(head) + 1, helper.make_node("Mul", ["cam_raw", "k"], ["cam"]))
    onnx.save(m, str(tmp_path / "scaled.onnx"))
    err = compare.compare_outputs(d / "model.onnx", tmp_path / "scaled.onnx", ev, "image", threads=1)
    assert err["cam"].rel_max == pytest.approx(0.01, rel=1e-4)
    assert err["cam_n"].rel_max < 1e-5  # the normalisation divides the factor out


def test_quantize_refuses_bad_arguments(tiny, tmp_path):
    d, _, cal, _ = tiny
    with pytest.raises(G.QuantizeError, match="calibration methods"):
        int8.quantize_model(d / "model.onnx", tmp_path / "x.onnx", cal, methods=("kl",))
    with pytest.raises(G.QuantizeError, match="one input named"):
        int8.quantize_model(d / "model.onnx", tmp_path / "x.onnx", cal, "input")
    with pytest.raises(G.QuantizeError, match="no calibration"):
        int8.quantize_model(d / "model.onnx", tmp_path / "x.onnx", [])
    with pytest.raises(G.QuantizeError, match="no convolution left"):
        int8.quantize_model(d / "model.onnx", tmp_path / "x.onnx", cal,
                         nodes_to_exclude=("conv1", "conv2", "conv3"))


def test_fp16_graph_is_valid_fp32_at_the_edges_and_close(tiny, tmp_path):
    d, _, _, ev = tiny
    out = tmp_path / "model.onnx"
    kept = fp16.convert_fp16(d / "model.onnx", out)
    m = onnx.load(str(out))
    onnx.checker.check_model(m)  # also: topologically sorted, no duplicate Cast nodes
    names = [n.name for n in m.graph.node]
    assert len(names) == len(set(names))
    assert kept == ["norm", "peak", "peak_eps", "relu_n"]
    types = _initializer_types(out)
    assert all(types[w] == TensorProto.FLOAT16 for w in ("w1", "w2", "w3", "wh"))
    assert types["eps"] == TensorProto.FLOAT  # the normalisation's epsilon stays fp32
    io = [*m.graph.input, *m.graph.output]
    assert all(v.type.tensor_type.elem_type == TensorProto.FLOAT for v in io)
    # onnxruntime's CPU provider runs it; fp16 keeps ~3 significant digits
    err = compare.compare_outputs(d / "model.onnx", out, ev, "image", threads=1)
    assert err["cam"].rel_max < 5e-3
    # per-channel max normalisation magnifies cam's error where a channel's peak is small
    assert err["cam_n"].rel_max < 0.05 and err["cam_n"].rel_mean < 1e-3
    assert err["cam"].max_abs > 0  # it really computed in fp16


def test_fp16_shared_input_of_two_blocked_nodes(tmp_path):
    """onnxruntime's converter emits one Cast per blocked consumer with the same name; two
    blocked nodes reading one fp16 tensor must still give a loadable graph."""
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((4, 3, 1, 1)).astype(np.float32), "w")
    nodes = [helper.make_node("Conv", ["image", "w"], ["cam"], name="head"),
             helper.make_node("Relu", ["cam"], ["r"], name="a"),
             helper.make_node("Sigmoid", ["cam"], ["s"], name="b"),
             helper.make_node("Add", ["r", "s"], ["out"], name="c")]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, 5, 5])],
                          [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 4, 5, 5])], [w])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)], ir_version=10)
    onnx.save(model, str(tmp_path / "g.onnx"))
    fp16.convert_fp16(tmp_path / "g.onnx", tmp_path / "h.onnx", node_block_list=["a", "b"])
    x = rng.standard_normal((1, 3, 5, 5)).astype(np.float32)
    err = compare.compare_outputs(tmp_path / "g.onnx", tmp_path / "h.onnx", [x], "image", threads=1)
    assert err["out"].rel_max < 5e-3


def test_conv_macs_by_hand(tiny):
    d, *_ = tiny
    H, W = 30, 41
    h2, w2 = 15, 21  # stride 2, pad 1, kernel 3
    want = H * W * 8 * 3 * 9 + h2 * w2 * 16 * 8 * 9 + h2 * w2 * 16 * 16 + h2 * w2 * 4 * 16
    assert conv_macs(d / "model.onnx", (1, 3, H, W)) == want
    assert conv_macs(d / "model.onnx", (2, 3, H, W)) == 2 * want


def test_precision_info_schema():
    p = PrecisionInfo()
    assert p.weights == "fp32" and p.calibration is None
    with pytest.raises(ValueError):
        PrecisionInfo(weights="int4")


@pytest.mark.slow
def test_export_int8_and_fp16_model_dirs(tmp_path):
    """`seam export --quantize int8 --calibration DIR` / fp16: the manifest records
    the precision and calibration, the sha256 match the new graph, the engine runs it and
    its CAMs stay close to the fp32 export's."""
    from seam.service.engine.onnx_engine import OnnxEngine
    from seam.training.export import export_model
    from typer.testing import CliRunner

    from seam.cli import app
    from seam.modelrepo.manifest import file_sha256, load_model_dir
    from testkit.checkpoints import CLASSES, make_checkpoint

    ckpt = tmp_path / "seam.pth"
    make_checkpoint(ckpt, sidecar={"class_names": CLASSES})
    cal_dir = tmp_path / "cal"
    photos(cal_dir, n=7)
    models = tmp_path / "models"
    fp32 = export_model(ckpt, "seam", "fp32", models, check_shapes=[(1, 3, 37, 61)], threads=2)
    runner = CliRunner()
    r = runner.invoke(app, ["export", "--checkpoint", str(ckpt), "--name", "int8", "--models-dir", str(models),
                            "--quantize", "int8", "--calibration", str(cal_dir), "--calibration-n", "5"])
    assert r.exit_code == 0, r.output
    m = load_model_dir(models / "int8")  # validates schema and sha256
    p = m.precision
    assert p.weights == "int8" and p.provider == "cpu"
    assert p.calibration.images == 5 and p.calibration.source == str(cal_dir)
    assert p.calibration.scales == m.cam.scales
    assert p.calibration.method in C.CALIBRATION_METHODS
    assert set(p.calibration.method_errors) == set(C.CALIBRATION_METHODS)
    assert p.calibration.method_errors[p.calibration.method] == min(p.calibration.method_errors.values())
    assert p.speedup is not None and p.speedup > 0 and set(p.max_error) == set(m.onnx.outputs)
    assert m.onnx.sha256 == file_sha256(models / "int8" / "model.onnx") != fp32.manifest.onnx.sha256
    assert m.pcm == fp32.manifest.pcm  # the PCM block graph is not touched
    ops = {n.op_type for n in onnx.load(str(models / "int8" / "model.onnx")).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    assert load_model_dir(models / "fp32").precision.weights == "fp32"

    # fp16: the same hook on a copy of the fp32 directory (a third export would only cost time)
    shutil.copytree(models / "fp32", models / "fp16")
    m16 = model_dir.apply_precision(models / "fp16", fp32.manifest, "fp16", threads=2)
    (models / "fp16" / "manifest.json").write_text(m16.to_json())
    m16 = load_model_dir(models / "fp16")
    assert m16.precision.weights == "fp16" and m16.precision.provider == "cuda"
    assert m16.precision.max_error["cam"] < 5e-3

    rgb = np.asarray(Image.open(sorted(cal_dir.iterdir())[0]).convert("RGB"))
    maps = {}
    for name in ("fp32", "int8", "fp16"):
        eng = OnnxEngine.from_model_dir(models / name, providers="cpu", threads=2)
        res = eng.cam(rgb, labels=[0, 1], scales=[1.0], flip=False)
        assert res.cams.shape == (2, *rgb.shape[:2])
        maps[name] = res.cams
    assert np.abs(maps["fp16"] - maps["fp32"]).max() < 0.02
    assert np.abs(maps["int8"] - maps["fp32"]).mean() < 0.1  # random weights, 5 images: loose, but not noise

    r = runner.invoke(app, ["export", "--checkpoint", str(ckpt), "--name", "bad", "--models-dir", str(models),
                            "--quantize", "int8"])
    assert r.exit_code != 0 and "--calibration" in r.output
    assert not (models / "bad").exists()
