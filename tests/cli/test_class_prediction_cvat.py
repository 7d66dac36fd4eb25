"""The two former `python -m` scripts as `seam` commands: `seam class-prediction` (the model is
faked: the command's job is the options, the tuning order, the report and its errors) and
`seam cvat function-yaml` against the bundled model."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from seam.cli import app
from tests.support import REPO


def _voc_ids(root: Path, ids: list[str]) -> Path:
    (root / "ImageSets" / "Segmentation").mkdir(parents=True)
    (root / "ImageSets" / "Segmentation" / "val.txt").write_text("\n".join(ids) + "\n")
    return root


@pytest.fixture
def fake_model(monkeypatch):
    """Two foreground classes; an image's class-0 score is read from its id ("a" 0.9, "b" 0.3)."""
    from seam.training.evaluation import class_prediction as cp

    calls: list[tuple[str, list[str]]] = []

    def run_images(model, num_fg, root, ids, scales=(), device="cpu"):
        calls.append((Path(root).name, list(ids)))
        out = []
        for i in ids:
            gt = np.zeros((4, 4), np.uint8)
            gt[:2] = 1  # class 0 (label 1) present in every image
            cams = np.zeros((num_fg, 4, 4), np.float32)
            cams[0, :2] = 1.0
            out.append(cp.ImageResult({0}, np.array([0.9 if i.startswith("a") else 0.3, 0.0]), cams, gt))
        return out

    monkeypatch.setattr(cp, "load_seam", lambda ckpt: (object(), 2, ["background", "disc", "square"]))
    monkeypatch.setattr(cp, "run_images", run_images)
    return calls


def test_class_prediction_tunes_then_reports(tmp_path, fake_model):
    tune = _voc_ids(tmp_path / "tune", ["b1", "b2"])
    data = _voc_ids(tmp_path / "data", ["a1", "b1"])
    out = tmp_path / "report" / "cp.json"
    r = CliRunner().invoke(app, ["class-prediction", "--checkpoint", "ckpt.pth", "--data", str(data), "--list",
                                 "val.txt", "--tune-data", str(tune), "--scales", "1.0", "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert fake_model == [("tune", ["b1", "b2"]), ("data", ["a1", "b1"])]  # tuning set first
    report = json.loads(out.read_text())
    # on the tuning set every image scores 0.3: the best grid threshold admits it
    assert report["tuning"]["chosen"] <= 0.3 and report["scales"] == [1.0]
    assert report["default"]["recall"] == 0.5 and report["chosen"]["recall"] == 1.0
    assert "default  cls_threshold 0.50" in r.output and "chosen" in r.output


def test_class_prediction_given_threshold_skips_tuning(tmp_path, fake_model):
    data = _voc_ids(tmp_path / "data", ["a1"])
    r = CliRunner().invoke(app, ["class-prediction", "--checkpoint", "c", "--data", str(data), "--list", "val.txt",
                                 "--tune-data", str(data), "--cls-threshold", "0.95"])
    assert r.exit_code == 0, r.output
    assert fake_model == [("data", ["a1"])] and "chosen   cls_threshold 0.95" in r.output


def test_class_prediction_errors_are_one_line(tmp_path):
    r = CliRunner().invoke(app, ["class-prediction", "--checkpoint", str(tmp_path / "none.pth"), "--data",
                                 str(tmp_path)])
    assert r.exit_code == 2 and "error:" in r.output and "Traceback" not in r.output
    r = CliRunner().invoke(app, ["class-prediction", "--checkpoint", "c", "--data", str(tmp_path), "--scales", "x"])
    assert r.exit_code == 2 and "--scales" in r.output


def test_cvat_function_yaml_lists_the_models_classes():
    r = CliRunner().invoke(app, ["cvat", "function-yaml", "--models-dir", str(REPO / "models"), "--seam-url",
                                 "http://seam-api:8000", "--name", "mine"])
    assert r.exit_code == 0, r.output
    doc = yaml.safe_load(r.output)
    manifest = json.loads((REPO / "models" / "seam-demo" / "manifest.json").read_text())
    assert [s["name"] for s in json.loads(doc["metadata"]["annotations"]["spec"])] == manifest["class_names"][1:]
    assert doc["metadata"]["name"] == "mine"
    assert {"name": "SEAM_URL", "value": "http://seam-api:8000"} in doc["spec"]["env"]
    # the shipped function.yaml is this command's output for the bundled model
    shipped = (REPO / "docker" / "cvat-nuclio" / "function.yaml").read_text()
    r = CliRunner().invoke(app, ["cvat", "function-yaml", "--models-dir", str(REPO / "models"), "--seam-url",
                                 "http://seam-api:8000"])
    assert r.output in shipped and "seam cvat function-yaml" in shipped


def test_cvat_function_yaml_without_a_model_is_a_clear_error(tmp_path):
    r = CliRunner().invoke(app, ["cvat", "function-yaml", "--models-dir", str(tmp_path / "none"), "--seam-url", "x"])
    assert r.exit_code == 2 and "cannot read the model's classes" in r.output and "Traceback" not in r.output


def test_the_old_script_entries_are_gone():
    import seam.service.integrations.cvat as cvat
    import seam.training.evaluation.class_prediction as cp

    assert not hasattr(cvat, "main") and not hasattr(cp, "main")
