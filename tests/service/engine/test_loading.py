"""Loading models into the ONNX engine: manifests and their checksums, repository selection, label
sets that must agree, providers and threads, a kind that cannot stand alone. Small hand-built
ONNX graphs (tests/service/fakes/onnx_models.py) stand in for trained networks."""
from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from seam.service.engine.onnx_engine import OnnxEngine

from seam.modelrepo import runtime
from seam.modelrepo.manifest import ManifestError, read_manifest
from tests.service.fakes.onnx_models import write_model


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
    (lambda m: m.update(pcm=None), "pcm graph"),
    (lambda m: m.update(schema_version=1), "re-export"),
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


def test_affinity_alone_is_refused(tmp_path):
    write_model(tmp_path, "aff", "affinity")
    with pytest.raises(ManifestError, match="no seam or deeplab model"):
        OnnxEngine(tmp_path, threads=1)
