"""OnnxEngine without torch: small hand-built ONNX graphs with the exported models'
interface (image -> stride-8 maps) stand in for trained networks."""
from __future__ import annotations

import json
import logging
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from seam.common.cam import MultiScaleConfig, cams_to_label, multiscale_cam
from seam.common.image import Normalization
from service.engine import runtime
from service.engine.manifest import (
    KIND_OUTPUTS,
    CamSettings,
    DeepLabSettings,
    Manifest,
    ManifestError,
    OnnxFile,
    Provenance,
    RandomWalkSettings,
    file_sha256,
    read_manifest,
)
from service.engine.onnx_engine import OnnxEngine

FG = ["cat", "dog", "bird"]
CLASSES = ["background", *FG]


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
        nodes.append(helper.make_node("Relu" if name == "cam_rv" else "Identity", [f"{name}_pre"], [name]))
        outs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, ["batch", c, "h8", "w8"]))
    graph = helper.make_graph(
        nodes, "fake", [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 3, "height", "width"])],
        outs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 10
    return model


def write_model(root: Path, name: str, kind: str = "seam", classes: list[str] = CLASSES, seed: int = 0,
                **settings) -> Path:
    d = root / name
    d.mkdir(parents=True)
    n_out = {"seam": len(classes), "deeplab": len(classes), "affinity": 16}[kind]
    onnx.save(stride8_graph({o: n_out for o in KIND_OUTPUTS[kind]}, seed), str(d / "model.onnx"))
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


def image(h: int = 45, w: int = 61, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("models")
    write_model(root, "seam-a", "seam")
    write_model(root, "aff", "affinity", seed=1)
    write_model(root, "dl", "deeplab", seed=2)
    return root


@pytest.fixture(scope="module")
def engine(repo) -> OnnxEngine:
    return OnnxEngine(repo, providers="auto", threads=2)


def test_repository_and_methods(engine):
    infos = {m.kind: m for m in engine.models()}
    assert set(infos) == {"seam", "affinity", "deeplab"}
    assert infos["seam"].classes == FG and infos["seam"].provider == "CPUExecutionProvider"
    assert infos["seam"].manifest["onnx"]["outputs"] == ["cam", "cam_rv"]
    assert engine.methods() == ["deeplab", "rw", "pcm", "cam"]
    assert engine.foreground_classes() == FG
    assert engine.runtime.threads == 2


def test_single_model_dir(repo):
    eng = OnnxEngine.from_model_dir(repo / "seam-a", threads=1)
    assert [m.name for m in eng.models()] == ["seam-a"]
    assert eng.methods() == ["pcm", "cam"]
    with pytest.raises(ValueError, match="not available"):
        eng.segment(image(), method="rw")
    with pytest.raises(ManifestError, match="no manifest.json"):
        OnnxEngine.from_model_dir(repo)


def test_cam_equals_shared_code_with_an_onnx_runner(engine, repo):
    """The engine is multiscale_cam over onnxruntime: same maps as calling it directly."""
    import onnxruntime as ort

    sess = ort.InferenceSession(str(repo / "seam-a" / "model.onnx"), providers=["CPUExecutionProvider"])
    runner = lambda b: tuple(sess.run(["cam", "cam_rv"], {"image": b}))
    rgb = image(37, 61)
    for refined in (True, False):
        ref = multiscale_cam(rgb, runner, [0, 2], MultiScaleConfig(scales=(0.5, 1.0), refined=refined,
                                                                    normalization=Normalization()))
        got = engine.cam(rgb, [2, 0], refined=refined)
        assert got.classes == [0, 2] and got.cams.shape == (2, 37, 61) and got.cams.dtype == np.float32
        np.testing.assert_allclose(got.cams, ref.cams, atol=1e-5)
        np.testing.assert_allclose(got.scores, ref.scores, atol=1e-6)
    pred = engine.cam(rgb, None, scales=[1.0], flip=False, cls_threshold=0.0)
    assert pred.classes == [0, 1, 2]  # every class at threshold 0
    assert engine.cam(rgb, None, cls_threshold=1.0).classes == []


def test_big_flip_pairs_run_one_pass_at_a_time(engine, monkeypatch):
    from service.engine import onnx_engine

    rgb = image(40, 48)
    ref = engine.cam(rgb, [1])
    monkeypatch.setattr(onnx_engine, "PCM_BATCH_BYTES", 1)
    got = engine.cam(rgb, [1])
    np.testing.assert_allclose(got.cams, ref.cams, atol=1e-6)


def test_input_validation(engine):
    with pytest.raises(ValueError, match="uint8"):
        engine.cam(image().astype(np.float32))
    with pytest.raises(ValueError, match=r"\(H, W, 3\)"):
        engine.cam(image()[..., 0])
    with pytest.raises(ValueError, match="out of range"):
        engine.cam(image(), [3])
    with pytest.raises(ValueError, match="scales"):
        engine.cam(image(), scales=[0.0])
    with pytest.raises(ValueError, match="at most 4096"):
        engine.cam(np.zeros((8, 2100, 3), np.uint8), scales=[2.0])
    with pytest.raises(ValueError, match="method 'nope'"):
        engine.segment(image(), method="nope")
    with pytest.raises(ValueError, match="threshold"):
        engine.segment(image(), method="pcm", threshold=2.0)


def test_segment_cam_methods(engine):
    rgb = image(33, 47)
    for method in ("pcm", "cam"):
        res = engine.segment(rgb, [0, 1], method=method, threshold=0.3)
        cams = engine.cam(rgb, [0, 1], refined=method == "pcm")
        assert res.method == method and res.label.shape == (33, 47) and res.label.dtype == np.uint8
        np.testing.assert_array_equal(res.label, cams_to_label(cams.cams, cams.classes, 0.3))
        assert set(np.unique(res.label)) <= {0, 1, 2}


def test_segment_random_walk_equals_shared_random_walk(engine, repo):
    from seam.common.random_walk import random_walk_labels

    rgb = image(43, 50)
    res = engine.segment(rgb, [0, 2], method="rw")
    aff = engine._models["affinity"]
    feat = engine._affinity_features(aff, rgb)
    assert feat.shape == (16, 6, 7)  # ceil(43/8), ceil(50/8)
    rw = aff.manifest.random_walk
    cams = engine.cam(rgb, [0, 2])
    ref = random_walk_labels(feat, cams.cams, cams.classes, (43, 50), alpha=rw.alpha, beta=rw.beta,
                             logt=rw.logt, radius=rw.radius)
    np.testing.assert_array_equal(res.label, ref)
    assert res.classes == [0, 2] and res.cams is not None


def test_segment_deeplab(engine):
    rgb = image(41, 57)
    res = engine.segment(rgb)  # best method first
    assert res.method == "deeplab" and res.label.shape == (41, 57) and res.scores.shape == (3,)
    assert set(res.classes) == {int(c) - 1 for c in np.unique(res.label) if c > 0}
    only = engine.segment(rgb, [1], method="deeplab")
    assert set(np.unique(only.label)) <= {0, 2} and only.classes == [1]


def test_concurrent_calls_are_safe(engine):
    imgs = [image(30 + i, 40 + 2 * i, seed=i) for i in range(6)]
    seq = [engine.cam(im, [0, 1]).cams for im in imgs]
    with ThreadPoolExecutor(4) as pool:
        par = list(pool.map(lambda im: engine.cam(im, [0, 1]).cams, imgs * 2))
    for a, b in zip(seq * 2, par):
        np.testing.assert_array_equal(a, b)


# --- manifest and repository ---------------------------------------------------------------


def test_sha_mismatch_is_detected(tmp_path):
    d = write_model(tmp_path, "m")
    data = bytearray((d / "model.onnx").read_bytes())
    data[-1] ^= 1
    (d / "model.onnx").write_bytes(bytes(data))
    with pytest.raises(ManifestError, match="does not match the manifest"):
        OnnxEngine(tmp_path, threads=1)
    (d / "model.onnx").unlink()
    with pytest.raises(ManifestError, match="missing"):
        OnnxEngine(tmp_path, threads=1)


@pytest.mark.parametrize("edit,message", [
    (lambda m: m.update(class_names=["cat", "dog"]), "start with 'background'"),
    (lambda m: m["onnx"].update(outputs=["logits"]), "must output"),
    (lambda m: m["onnx"].update(sha256="xyz"), "sha256"),
    (lambda m: m.update(kind="pspnet"), "kind"),
    (lambda m: m.update(unexpected=1), "unexpected"),
    (lambda m: m.update(cam=None), "cam settings"),
    (lambda m: m["input"].update(std=[0.2, 0.0, 0.2]), "std"),
])
def test_manifest_schema(tmp_path, edit, message):
    d = write_model(tmp_path, "m")
    data = json.loads((d / "manifest.json").read_text())
    edit(data)
    (d / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(ManifestError, match=message):
        read_manifest(d)


def test_repository_selection(tmp_path, caplog):
    write_model(tmp_path, "b-seam", seed=1)
    write_model(tmp_path, "a-seam", seed=2)
    (tmp_path / ".a-seam.export-tmp").mkdir()  # an unfinished export is ignored
    (tmp_path / "notes").mkdir()  # so is a directory without a manifest
    with caplog.at_level(logging.WARNING):
        eng = OnnxEngine(tmp_path, threads=1)
    assert [m.name for m in eng.models()] == ["a-seam"] and "using a-seam" in caplog.text
    assert [m.name for m in OnnxEngine(tmp_path, threads=1, select={"seam": "b-seam"}).models()] == ["b-seam"]
    with pytest.raises(ManifestError, match="no seam model named"):
        OnnxEngine(tmp_path, threads=1, select={"seam": "c"})
    with pytest.raises(ManifestError, match="no models"):
        OnnxEngine(tmp_path / "notes", threads=1)


def test_label_sets_must_agree(tmp_path):
    write_model(tmp_path, "s")
    write_model(tmp_path, "d", "deeplab", classes=["background", "car"])
    with pytest.raises(ManifestError, match="different class names"):
        OnnxEngine(tmp_path, threads=1)


# --- providers and threads -----------------------------------------------------------------


def test_provider_selection_without_gpu(monkeypatch, tmp_path, capfd, caplog):
    monkeypatch.setattr(runtime, "gpu_usable", lambda: False)
    assert runtime.select_providers("auto") == ["CPUExecutionProvider"]
    assert runtime.select_providers("cuda,cpu") == ["CPUExecutionProvider"]
    assert runtime.select_providers("cpu") == ["CPUExecutionProvider"]
    with pytest.raises(ValueError, match="no usable GPU|no CUDA provider"):
        runtime.select_providers("cuda")
    with pytest.raises(ValueError, match="unknown provider"):
        runtime.select_providers("tpu")
    write_model(tmp_path, "m")
    with caplog.at_level(logging.WARNING):
        eng = OnnxEngine(tmp_path, providers="auto", threads=1)
    assert eng.provider == "CPUExecutionProvider" and eng.models()[0].provider == "CPUExecutionProvider"
    assert not caplog.records
    err = capfd.readouterr().err
    assert "rror" not in err and "CUDA" not in err


def test_gpu_detection_on_this_machine():
    has_dev = any(Path("/dev").glob("nvidia[0-9]*"))
    runtime.gpu_usable.cache_clear()
    if not has_dev:
        assert runtime.gpu_usable() is False
        assert runtime.select_providers("auto") == ["CPUExecutionProvider"]


def test_threads_are_explicit():
    assert runtime.default_threads() >= 1
    assert runtime.session_options(3).intra_op_num_threads == 3
    with pytest.raises(ValueError, match="threads"):
        runtime.resolve_runtime("cpu", 0)


def test_crf_uses_the_shared_crf(engine):
    pytest.importorskip("pydensecrf")
    from seam.common.crf import crf_refine_cams

    rgb = image(35, 42)
    res = engine.segment(rgb, [0, 2], method="pcm", threshold=0.3, crf=True)
    ref = crf_refine_cams(rgb, res.cams.cams, res.cams.classes, 0.3)  # manifest CRF = the authors' defaults
    np.testing.assert_array_equal(res.label, ref)
    for method in ("rw", "deeplab"):
        out = engine.segment(rgb, [0, 2], method=method, crf=True)
        assert out.label.shape == (35, 42) and set(np.unique(out.label)) <= {0, 1, 3}


def test_affinity_alone_is_refused(tmp_path):
    write_model(tmp_path, "aff", "affinity")
    with pytest.raises(ManifestError, match="no seam or deeplab model"):
        OnnxEngine(tmp_path, threads=1)
