"""CLI end to end on a tiny synthetic set: synth -> cam (torch) -> eval."""
import json

import numpy as np
import pytest
import torch
from seam.training.models.registry import create_model
from typer.testing import CliRunner

from seam.cli import app

runner = CliRunner()


@pytest.mark.slow  # seconds of CPU each: out of the fast loop (under a minute), CI runs it
def test_synth_cam_eval_end_to_end(tmp_path):
    data = tmp_path / "synth"
    r = runner.invoke(app, ["synth", "--out", str(data), "--n", "6", "--seed", "3", "--size", "64"])
    assert r.exit_code == 0, r.output
    torch.manual_seed(0)
    ckpt = tmp_path / "seam.pth"
    model = create_model("seam", "resnet38_small", num_classes=6)
    torch.save(model.state_dict(), ckpt)
    names = (data / "classes.txt").read_text().split()
    ckpt.with_suffix(".json").write_text(json.dumps({"class_names": names}))

    out = tmp_path / "cam"
    lst = data / "ImageSets" / "Segmentation" / "train.txt"
    r = runner.invoke(app, ["cam", "--checkpoint", str(ckpt), "--images", str(lst), "--out", str(out),
                            "--labels", str(data / "cls_labels.npy"), "--scales", "0.5,1.0", "--save-png",
                            "--authors-npy"])  # the release's pickled dicts; the npz default: tests/cli
    assert r.exit_code == 0, r.output
    ids = lst.read_text().split()
    labels = np.load(data / "cls_labels.npy", allow_pickle=True).item()
    for i in ids:
        d = np.load(out / f"{i}.npy", allow_pickle=True).item()
        assert sorted(d) == [int(c) for c in np.flatnonzero(labels[i])]
        for v in d.values():
            # the release zeroes values at the minimum and then shifts them: they may go below 0
            assert v.dtype == np.float32 and v.shape == (64, 64) and v.max() <= 1
        assert (out / f"{i}.png").is_file()

    js = tmp_path / "eval.json"
    r = runner.invoke(app, ["eval", "--pred", str(out), "--gt", str(data / "SegmentationClass"), "--list", str(lst),
                            "--type", "npy", "--curve", "--json", str(js), "--classes", str(data / "classes.txt")])
    assert r.exit_code == 0, r.output
    res = json.loads(js.read_text())
    assert 0 <= res["miou"] <= 100 and len(res["curve"]) == 60 and set(res["per_class"]) == set(names)


def test_cam_cli_user_errors(tmp_path):
    r = runner.invoke(app, ["cam", "--checkpoint", str(tmp_path / "nope.pth"), "--images", str(tmp_path),
                            "--out", str(tmp_path / "o")])
    assert r.exit_code == 2 and "no images" in r.output
    (tmp_path / "a.png").write_bytes(b"junk")
    r = runner.invoke(app, ["cam", "--checkpoint", str(tmp_path / "nope.pth"), "--images", str(tmp_path),
                            "--out", str(tmp_path / "o")])
    assert r.exit_code == 2 and "not found" in r.output
