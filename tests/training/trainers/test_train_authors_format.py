"""The full-size network trained by `seam train seam` is saved in the authors' format:
exactly their keys and shapes, loadable with strict=True. One real iteration of
ResNet-38 on two tiny images (the slow test of this folder, ~20-40 s on 2 CPU cores)."""
import json

import numpy as np
import pytest
import torch
from PIL import Image
from seam.training.models.seam import SEAM
from typer.testing import CliRunner

pytestmark = pytest.mark.slow  # a real ResNet-38 iteration


def _tiny_voc(root):
    (root / "JPEGImages").mkdir(parents=True)
    rng = np.random.default_rng(0)
    labels = {}
    for i in ("2007_000032", "2007_000039"):
        Image.fromarray(rng.integers(0, 255, (60, 70, 3), dtype=np.uint8)).save(root / "JPEGImages" / f"{i}.jpg")
        v = np.zeros(20, np.float32)
        v[int(rng.integers(20))] = 1
        labels[i] = v
    (root / "list.txt").write_text("/JPEGImages/2007_000032.jpg /SegmentationClassAug/2007_000032.png\n"
                                   "/JPEGImages/2007_000039.jpg /SegmentationClassAug/2007_000039.png\n")
    np.save(root / "cls_labels.npy", labels)
    return root


def test_resnet38_run_saves_the_authors_state_dict(tmp_path, official_keys):
    from seam.cli import app

    data = _tiny_voc(tmp_path / "voc")
    out = tmp_path / "run"
    r = CliRunner().invoke(app, [
        "train", "seam", "--data", str(data), "--dataset", "voc", "--train-list", str(data / "list.txt"),
        "--labels", str(data / "cls_labels.npy"), "--backbone", "resnet38", "--crop", "64", "--batch-size", "2",
        "--epochs", "1", "--no-eval", "--out", str(out), "--bn-calibration", "1"])
    assert r.exit_code == 0, r.output
    sd = torch.load(out / "seam_final.pth", map_location="cpu", weights_only=True)
    assert all(torch.is_tensor(v) for v in sd.values())  # bare: no wrapper, no metadata
    assert {k: list(v.shape) for k, v in sd.items()} == official_keys["seam"]
    assert list(sd) == list(official_keys["seam"])  # same order as the authors' file
    net = SEAM()
    net.load_state_dict(sd, strict=True)
    assert torch.equal(net.fc8.weight, sd["fc8.weight"])
    side = json.loads((out / "seam_final.json").read_text())
    assert side["backbone"] == "resnet38" and side["num_classes"] == 21 and side["class_names"][0] == "background"
    assert side["training"]["iterations"] == 1
