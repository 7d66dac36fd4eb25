"""`seam cam` gives the service's answer: `--model DIR` runs the ONNX engine, predicted classes
use the manifest's class threshold unless `--cls-threshold` overrides it, and CAM files carry no
pickle unless `--authors-npy` asks for the release's format."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from seam.service.engine.onnx_engine import OnnxEngine
from typer.testing import CliRunner

from seam.cli import app
from tests.support import REPO

DEMO = REPO / "models" / "seam-demo"


def demo_copy(tmp_path: Path, cls_threshold: float) -> Path:
    """The bundled model with another manifest class threshold (the weights are symlinked)."""
    model = tmp_path / f"model-{cls_threshold}"
    model.mkdir()
    for f in DEMO.iterdir():
        if f.name != "manifest.json":
            (model / f.name).symlink_to(f)
    manifest = json.loads((DEMO / "manifest.json").read_text())
    manifest["cam"]["cls_threshold"] = cls_threshold
    (model / "manifest.json").write_text(json.dumps(manifest))
    return model


@pytest.fixture
def images(tmp_path: Path) -> Path:
    folder = tmp_path / "images"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i, (h, w) in enumerate([(48, 72), (64, 40)]):  # non-square, both orientations
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(folder / f"im{i}.png")
    return folder


def run(*args: str) -> str:
    r = CliRunner().invoke(app, ["cam", *args])
    assert r.exit_code == 0, r.output
    return r.output


def npz_classes(path: Path) -> list[int]:
    with np.load(path, allow_pickle=False) as z:  # no pickle in the default output
        assert z["cams"].dtype == np.float32 and z["cams"].shape[0] == z["classes"].shape[0]
        assert z["cams"].size == 0 or (z["cams"].min() >= 0.0 and z["cams"].max() <= 1.0)
        return [int(c) for c in z["classes"]]


@pytest.mark.parametrize("manifest_threshold", [0.0, 1.0])
def test_model_runs_onnx_with_the_manifests_class_threshold(tmp_path, images, manifest_threshold):
    """No --engine needed with --model; the classes are those the engine (the service's) predicts
    with the manifest's threshold: every class at 0, none at 1 (the old fixed 0.5 gave neither)."""
    model = demo_copy(tmp_path, manifest_threshold)
    run("--model", str(model), "--images", str(images), "--out", str(tmp_path / "out"))
    engine = OnnxEngine.from_model_dir(model)
    for src in sorted(images.iterdir()):
        got = npz_classes(tmp_path / "out" / f"{src.stem}.npz")
        service = engine.cam(np.asarray(Image.open(src).convert("RGB"))).classes
        assert got == list(service)
        assert (len(got) > 0) == (manifest_threshold == 0.0)


def test_cls_threshold_overrides_the_manifest(tmp_path, images):
    model = demo_copy(tmp_path, 0.0)
    run("--model", str(model), "--images", str(images), "--out", str(tmp_path / "out"), "--cls-threshold", "1.0",
        "--scales", "1.0")
    assert all(npz_classes(p) == [] for p in (tmp_path / "out").glob("*.npz"))


def test_authors_npy_keeps_the_release_format(tmp_path, images):
    run("--model", str(DEMO), "--images", str(images), "--out", str(tmp_path / "out"), "--authors-npy",
        "--labels", str(_labels(tmp_path, images)), "--scales", "1.0")
    files = sorted((tmp_path / "out").iterdir())
    assert [f.suffix for f in files] == [".npy", ".npy"]
    with pytest.raises(ValueError):  # a pickled dict: refused without allow_pickle
        np.load(files[0], allow_pickle=False)
    table = np.load(files[0], allow_pickle=True).item()
    assert sorted(table) == [0, 2] and all(m.dtype == np.float32 for m in table.values())


def _labels(tmp_path: Path, images: Path) -> Path:
    path = tmp_path / "labels.json"
    path.write_text(json.dumps({p.stem: ["disc", "triangle"] for p in images.iterdir()}))
    return path


@pytest.mark.parametrize("args,message", [
    ((), "pass --model models/NAME (onnx engine) or --checkpoint FILE"),
    (("--model", "m", "--checkpoint", "c.pth"), "not both"),
    (("--engine", "torch", "--model", "m"), "--engine torch runs a checkpoint"),
    (("--engine", "onnx", "--checkpoint", "c.pth"), "--engine onnx runs an exported model"),
    (("--engine", "tf", "--model", "m"), "unknown engine 'tf'"),
])
def test_engine_choice_errors(tmp_path, images, args, message):
    r = CliRunner().invoke(app, ["cam", "--images", str(images), "--out", str(tmp_path / "o"), *args])
    assert r.exit_code == 2 and message in " ".join(r.output.split()), r.output


def test_seam_eval_reads_the_default_npz(tmp_path, images):
    """The default output feeds `seam eval` (and `seam rw`, which finds files the same way)."""
    from seam.training.evaluation.evaluate import find_cam_file, load_cams

    out = tmp_path / "out"
    run("--model", str(DEMO), "--images", str(images), "--out", str(out), "--labels", str(_labels(tmp_path, images)),
        "--scales", "1.0", "--save-png")
    path = find_cam_file(out, "im0")
    assert path is not None and path.suffix == ".npz"
    classes, cams = load_cams(path)
    assert classes == [0, 2] and cams.shape == (2, 48, 72)
    gt = tmp_path / "gt"
    shutil.copytree(out, gt, ignore=shutil.ignore_patterns("*.npz"))
    r = CliRunner().invoke(app, ["eval", "--pred", str(out), "--gt", str(gt), "--type", "npy",
                                 "--classes", str(_classes(tmp_path))])
    assert r.exit_code == 0, r.output


def _classes(tmp_path: Path) -> Path:
    path = tmp_path / "classes.txt"
    path.write_text("background\ndisc\nsquare\ntriangle\nring\ncross\n")
    return path
