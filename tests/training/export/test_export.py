"""`seam export`: ONNX graphs that onnxruntime runs like eager torch, a valid manifest,
atomic writes, refusal on mismatch, and the authors' checkpoint format."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from seam.service.engine.onnx_engine import OnnxEngine
from seam.training.export import ExportError, export_model, onnx_export
from seam.training.export.specs import SPECS
from seam.training.models.registry import _constructors
from typer.testing import CliRunner

from seam.cli import app
from seam.modelrepo.manifest import file_sha256, load_model_dir
from seam.modelrepo.runtime import RuntimeConfig, create_session
from testkit.checkpoints import CLASSES, authors_resnet38_state_dict, make_checkpoint

SHAPES = [(1, 3, 37, 61), (2, 3, 200, 133)]
# Every test here exports through torch.onnx (dynamo): seconds each, so out of the fast loop;
# .ci/run runs them.
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    d = tmp_path_factory.mktemp("export")
    ckpt = d / "seam_small.pth"
    net = make_checkpoint(ckpt, sidecar={"class_names": CLASSES, "backbone": "resnet38_small"})
    res = export_model(ckpt, "seam", "tiny", d / "models")
    return net, ckpt, res


def test_manifest_and_files(exported):
    _, ckpt, res = exported
    assert res.model_dir.name == "tiny"
    assert sorted(p.name for p in res.model_dir.iterdir()) == ["manifest.json", "model.onnx", "pcm.onnx"]
    size = (res.model_dir / "model.onnx").stat().st_size
    assert 1e6 < size < 10e6  # the small backbone: one self-contained file of a few MB
    m = load_model_dir(res.model_dir)  # validates the schema and the sha256
    assert m.kind == "seam" and m.backbone == "resnet38_small"
    assert list(m.class_names) == CLASSES and m.foreground == CLASSES[1:]
    assert m.onnx.outputs == ("cam", "pcm_n", "pcm_g") and m.onnx.external_data == {}
    assert m.pcm.sha256 == file_sha256(res.model_dir / "pcm.onnx")
    # the demo-style sidecar has no resize range: the release's 448-768, working at the top
    assert m.input.train_long_side == (448, 768) and m.input.working_side == 768
    assert m.input.bytes_per_pixel > 0
    assert m.onnx.ir_version == 10 and m.onnx.opset == 18
    assert m.cam.bg_threshold == 0.26 and m.cam.scales == (0.5, 1.0, 1.5, 2.0) and m.cam.flip
    assert m.provenance.checkpoint_sha256 == file_sha256(ckpt)
    assert m.provenance.training_config["backbone"] == "resnet38_small"
    assert m.provenance.torch_version == torch.__version__
    assert max(m.provenance.parity.max_abs_diff.values()) <= 1e-4
    proto = onnx.load(str(res.model_dir / "model.onnx"))
    assert proto.ir_version == 10
    dims = [d.dim_param or d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["batch", 3, "height", "width"]
    assert not any(p.name.startswith(".") for p in res.model_dir.parent.iterdir())  # no temp dirs left


@pytest.mark.parametrize("shape", SHAPES)
def test_onnxruntime_matches_torch_on_odd_sizes(exported, shape):
    """The backbone graph's outputs equal the eager network's, and the blocked PCM graph
    (three column blocks here) reproduces the release's dense cam_rv."""
    from seam.modelrepo.pcm import run_pcm

    net, _, res = exported
    sess, provider = create_session(res.model_dir / "model.onnx", RuntimeConfig(threads=2))
    pcm_sess, _ = create_session(res.model_dir / "pcm.onnx", RuntimeConfig(threads=2))
    assert provider == "CPUExecutionProvider"
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(3))
    with torch.enable_grad():  # the release's dense PCM
        ref_cam, ref_rv = (t.detach() for t in net.forward_stride8(x))
    cam, n, g = sess.run(["cam", "pcm_n", "pcm_g"], {"image": x.numpy()})
    assert cam.shape == tuple(ref_cam.shape) and np.abs(cam - ref_cam.numpy()).max() <= 1e-4
    hw = n.shape[-1] * n.shape[-2]
    rv = run_pcm(pcm_sess, n, g, budget=4 * hw * shape[0] * (hw // 3 + 1))
    assert rv.shape == tuple(ref_rv.shape) and np.abs(rv - ref_rv.numpy()).max() <= 1e-5


def test_blocked_torch_pcm_equals_dense(exported):
    """Inference (no grad) runs the PCM in column blocks: equal to the dense form to 1e-5."""
    from seam.common import pcm_blocks

    net, _, _ = exported
    x = torch.randn(2, 3, 120, 97, generator=torch.Generator().manual_seed(4))
    with torch.enable_grad():
        dense = net.forward_stride8(x)[1].detach()
    old = pcm_blocks.PCM_BLOCK_BYTES
    try:
        import seam.training.models.seam as seam_mod

        seam_mod.block_columns = lambda hw, b: 7  # many ragged blocks
        with torch.no_grad():
            blocked = net.forward_stride8(x)[1]
    finally:
        seam_mod.block_columns = pcm_blocks.block_columns
    assert old == pcm_blocks.PCM_BLOCK_BYTES
    assert torch.abs(blocked - dense).max() <= 1e-5


def test_refuses_to_write_on_mismatch(tmp_path, monkeypatch):
    ckpt = tmp_path / "c.pth"
    make_checkpoint(ckpt)
    models = tmp_path / "models"
    (models / "keep").mkdir(parents=True)
    (models / "keep" / "manifest.json").write_text("{}")
    real = onnx_export.check_parity

    def broken(*args, **kwargs):
        diffs, _ = real(*args, **kwargs)
        diffs["cam"] = 0.5
        return diffs, 0.5

    monkeypatch.setattr(onnx_export, "check_parity", broken)
    with pytest.raises(ExportError, match="does not match torch"):
        export_model(ckpt, "seam", "bad", models, check_shapes=[(1, 3, 37, 61)])
    with pytest.raises(ExportError, match="does not match torch"):
        export_model(ckpt, "seam", "keep", models, force=True, check_shapes=[(1, 3, 37, 61)])
    # nothing written, the existing model untouched, no temporary directories left
    assert sorted(p.name for p in models.iterdir()) == ["keep"]
    assert (models / "keep" / "manifest.json").read_text() == "{}"


def test_existing_model_needs_force(exported, tmp_path):
    _, ckpt, res = exported
    with pytest.raises(ExportError, match="already exists"):
        export_model(ckpt, "seam", "tiny", res.model_dir.parent)


def test_authors_bare_state_dict(tmp_path):
    """The release's format: a bare state dict with `module.` keys and no metadata ->
    21 VOC classes; backbone recovered from the weights."""
    ckpt = tmp_path / "resnet38_SEAM.pth"
    make_checkpoint(ckpt, num_classes=21, authors_format=True)
    res = export_model(ckpt, "seam", "authors", tmp_path / "models", check_shapes=[(1, 3, 37, 61)])
    m = load_model_dir(res.model_dir)
    assert m.class_names[0] == "background" and m.class_names[1] == "aeroplane" and len(m.class_names) == 21
    assert m.backbone == "resnet38_small"


def test_unknown_kind_and_bad_checkpoint(tmp_path):
    with pytest.raises(ExportError, match="unknown kind"):
        export_model(tmp_path / "x.pth", "pspnet", "x", tmp_path)
    with pytest.raises(ExportError, match="model name"):
        export_model(tmp_path / "x.pth", "seam", "../x", tmp_path)
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ExportError, match="cannot read checkpoint"):
        export_model(bad, "seam", "x", tmp_path / "models")
    assert not (tmp_path / "models").exists() or not any((tmp_path / "models").iterdir())


@pytest.mark.parametrize("kind", ["affinity", "deeplab"])
def test_other_kinds(kind, tmp_path):
    """Exported with the same parity check once their networks exist; a clear error before."""
    ckpt = tmp_path / f"{kind}.pth"
    if kind not in _constructors():
        torch.save({"conv1a.weight": torch.zeros(8, 3, 3, 3)}, ckpt)
        with pytest.raises(ExportError, match=f"cannot build a {kind} network"):
            export_model(ckpt, kind, kind, tmp_path / "models")
        return
    net = make_checkpoint(ckpt, kind=kind, num_classes=4, sidecar={"class_names": CLASSES})
    res = export_model(ckpt, kind, kind, tmp_path / "models", check_shapes=SHAPES)
    m = load_model_dir(res.model_dir)
    assert m.onnx.outputs == SPECS[kind].outputs
    sess, _ = create_session(res.model_dir / "model.onnx", RuntimeConfig(threads=2))
    graph = SPECS[kind].graph(net).eval()
    for shape in SHAPES:
        x = torch.randn(*shape)
        with torch.no_grad():
            ref = graph(x)
        got = sess.run(None, {"image": x.numpy()})[0]
        assert np.abs(got - ref.numpy()).max() <= 1e-4


def test_cli(tmp_path):
    ckpt = tmp_path / "c.pth"
    make_checkpoint(ckpt, sidecar={"class_names": CLASSES})
    runner = CliRunner()
    r = runner.invoke(app, ["export", "--checkpoint", str(ckpt), "--kind", "seam", "--name", "cli",
                            "--models-dir", str(tmp_path / "models")])
    assert r.exit_code == 0, r.output
    assert load_model_dir(tmp_path / "models" / "cli").kind == "seam"
    r = runner.invoke(app, ["export", "--checkpoint", str(ckpt), "--name", "cli",
                            "--models-dir", str(tmp_path / "models")])
    assert r.exit_code == 1 and "already exists" in r.output


def test_authors_resnet38_goes_to_external_data(official_keys, tmp_path):
    """The published network (421 MB of weights): external data file, hashed, loadable."""
    ckpt = tmp_path / "resnet38_SEAM.pth"
    try:
        torch.save(authors_resnet38_state_dict(official_keys["seam"]), ckpt)
        res = export_model(ckpt, "seam", "r38", tmp_path / "models", check_shapes=[(1, 3, 37, 61)])
        files = sorted(p.name for p in res.model_dir.iterdir())
        assert files == ["manifest.json", "model.onnx", "model.onnx.data", "pcm.onnx"]
        assert (res.model_dir / "model.onnx").stat().st_size < 5e6
        assert (res.model_dir / "model.onnx.data").stat().st_size > 400e6
        m = load_model_dir(res.model_dir)
        assert m.backbone == "resnet38" and len(m.class_names) == 21
        assert m.onnx.external_data["model.onnx.data"] == file_sha256(res.model_dir / "model.onnx.data")
        eng = OnnxEngine.from_model_dir(res.model_dir, threads=2)
        out = eng.cam(np.zeros((24, 40, 3), np.uint8), [0], scales=[1.0], flip=False)
        assert out.cams.shape == (1, 24, 40)
    finally:  # 850 MB of checkpoint and export: do not leave them in pytest's kept temp dirs
        shutil.rmtree(tmp_path, ignore_errors=True)


def test_parity_is_judged_on_the_outputs_scale():
    """Unnormalised outputs (DeepLab logits in the thousands here) are judged on their relative error;
    outputs within [-1, 1] on their absolute difference."""
    from types import SimpleNamespace

    class Session:
        def __init__(self, fn):
            self.fn = fn

        def run(self, names, feeds):
            return [self.fn(feeds["image"])]

    shapes = [(1, 3, 8, 8)]
    big = SimpleNamespace(outputs=("logits",), reference=lambda net, x: (x * 1000,))
    diffs, worst = onnx_export.check_parity(SimpleNamespace(net=None), big, Path("unused"), shapes,
                                            session=Session(lambda x: x * 1000 * (1 + 2e-5)))
    assert diffs["logits"] > 1e-2  # absolute: far above any tolerance
    assert 1e-5 < worst <= 2.1e-5  # relative to max |logits|
    small = SimpleNamespace(outputs=("cam",), reference=lambda net, x: (x * 0.01,))
    diffs, worst = onnx_export.check_parity(SimpleNamespace(net=None), small, Path("unused"), shapes,
                                            session=Session(lambda x: x * 0.01 + 1e-3))
    assert worst == pytest.approx(diffs["cam"]) and worst == pytest.approx(1e-3, rel=1e-3)
