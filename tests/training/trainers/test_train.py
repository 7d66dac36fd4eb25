"""SEAM training end to end on tiny data (CPU, small backbone): exact resume, the CLI on a
custom 3-class folder with evaluation, initialisation from a previous run, Table 1/3 modes."""
import json

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw
from seam.training.data.synth import generate
from seam.training.models.checkpoint import CheckpointError, read_checkpoint
from seam.training.models.registry import create_model, model_from_checkpoint
from seam.training.trainers.seam import TrainConfig, train
from seam.training.trainers.state import seed_everything
from typer.testing import CliRunner

from tests.training.helpers import torch_to_mxnet, write_params


@pytest.fixture(scope="module")
def tiny_synth(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth")
    generate(root, n=12, seed=0, size=48)  # 9 train images: 2 iterations of 4 per epoch
    return root


def _cfg(data, out, **kw) -> TrainConfig:
    base = dict(data=str(data), backbone="resnet38_small", crop=48, batch_size=4, epochs=2, lr=0.01,
                out=str(out), seed=3, evaluate=False, threads=1, log_every=1)
    base.update(kw)
    return TrainConfig(**base)


def _weights(run_dir):
    sd, _ = read_checkpoint(run_dir / "seam_final.pth")
    return sd


def _assert_same(a, b):
    assert a.keys() == b.keys()
    diff = [k for k in a if not torch.equal(a[k], b[k])]
    assert not diff, f"{len(diff)} tensors differ, first {diff[:3]}"


@pytest.mark.slow  # three short training runs
def test_resume_reaches_the_uninterrupted_weights(tiny_synth, tmp_path):
    whole = train(_cfg(tiny_synth, tmp_path / "whole"))
    assert whole["training"]["completed"] and whole["training"]["iterations"] == 4
    ref = _weights(tmp_path / "whole")

    # interrupted at the epoch boundary, then --resume from checkpoint.pth
    part = train(_cfg(tiny_synth, tmp_path / "epoch", stop_after=2))
    assert part["training"]["stopped"] == "stop_after" and not part["training"]["completed"]
    ck = torch.load(tmp_path / "epoch" / "checkpoint.pth", weights_only=True)
    assert (ck["epoch"], ck["batch_in_epoch"], ck["iteration"]) == (1, 0, 2)
    assert {"model", "optimizer", "rng", "config", "dataset_fingerprint"} <= ck.keys()
    train(_cfg(tiny_synth, tmp_path / "epoch", resume=True))
    _assert_same(_weights(tmp_path / "epoch"), ref)

    # interrupted mid-epoch (the --max-minutes / preemption case)
    train(_cfg(tiny_synth, tmp_path / "mid", stop_after=1))
    ck = torch.load(tmp_path / "mid" / "checkpoint.pth", weights_only=True)
    assert (ck["epoch"], ck["batch_in_epoch"]) == (0, 1)
    done = train(_cfg(tiny_synth, tmp_path / "mid", resume=True))
    assert done["training"]["completed"]
    _assert_same(_weights(tmp_path / "mid"), ref)

    # a different run does differ (the comparison has teeth)
    train(_cfg(tiny_synth, tmp_path / "other", seed=4))
    assert not torch.equal(_weights(tmp_path / "other")["fc8.weight"], ref["fc8.weight"])

    with pytest.raises(CheckpointError, match="lr"):
        train(_cfg(tiny_synth, tmp_path / "epoch", resume=True, lr=0.02))


def test_run_files_and_sidecar(tiny_synth, tmp_path):
    side = train(_cfg(tiny_synth, tmp_path / "r", epochs=1, max_minutes=0.0))
    run = tmp_path / "r"
    assert side["training"]["stopped"] == "max_minutes" and side["training"]["iterations"] == 1
    on_disk = json.loads((run / "seam_final.json").read_text())
    assert on_disk["class_names"][0] == "background" and on_disk["backbone"] == "resnet38_small"
    assert len(on_disk["dataset_fingerprint"]) == 64 and on_disk["config"]["crop"] == 48
    rows = (run / "log.csv").read_text().splitlines()
    assert rows[0].startswith("iteration,epoch,lr,loss,cls,er,ecr,minpool") and len(rows) == 2
    model, meta = model_from_checkpoint(run / "seam_final.pth")  # bare state dict + sidecar
    assert meta["class_names"] == on_disk["class_names"] and model.fc8.weight.shape[0] == 6
    raw = torch.load(run / "seam_final.pth", weights_only=True)
    assert all(torch.is_tensor(v) for v in raw.values()) and "fc8.weight" in raw  # authors' format


def test_weights_from_a_run_dir_reinitialise_a_different_head(tiny_synth, tmp_path):
    train(_cfg(tiny_synth, tmp_path / "src", epochs=1))
    folder = _three_class_folder(tmp_path / "folder", n=4)
    logs = []
    side = train(_cfg(folder, tmp_path / "dst", epochs=1, weights=str(tmp_path / "src")), log=logs.append)
    init = side["training"]["initialisation"]
    assert init["source"].endswith("seam_final.pth")
    assert init["reinitialised"] and init["reinitialised"][0].startswith("fc8.weight")
    assert any("re-initialised" in m for m in logs)
    src = _weights(tmp_path / "src")
    model, _ = model_from_checkpoint(tmp_path / "dst" / "seam_final.pth")
    # frozen layers carry over unchanged
    assert torch.equal(model.state_dict()["conv1a.weight"], src["conv1a.weight"])


def test_table1_baseline_and_table3_transforms_run(tiny_synth, tmp_path):
    side = train(_cfg(tiny_synth, tmp_path / "base", epochs=1, er=False, pcm=False))
    h = side["metrics"]["history"][0]
    assert h["er"] == 0 and h["ecr"] == 0 and h["minpool"] == 0 and h["cls"] > 0
    seed_everything(3)  # the trainer's seed: rebuild the initial network
    init = create_model("seam", "resnet38_small", 6).state_dict()
    trained = _weights(tmp_path / "base")
    assert torch.equal(trained["f9.weight"], init["f9.weight"])  # --no-pcm: PCM layers untouched
    assert not torch.equal(trained["fc8.weight"], init["fc8.weight"])
    assert torch.equal(trained["b2.conv_branch2a.weight"], init["b2.conv_branch2a.weight"])  # frozen b2
    side = train(_cfg(tiny_synth, tmp_path / "rot", epochs=1, transforms=("rescale", "rotate"), ohem=False))
    h = side["metrics"]["history"][0]
    assert h["er"] > 0 and h["ecr"] > 0


def _three_class_folder(root, n=6):
    """Red discs, blue squares, green triangles on grey; labels.csv and VOC-style GT PNGs."""
    root.mkdir(parents=True)
    (root / "SegmentationClass").mkdir()
    names = ["disc", "square", "triangle"]
    colours = [(220, 40, 40), (40, 60, 220), (40, 200, 60)]
    rng = np.random.default_rng(0)
    rows = ["image,labels"]
    for i in range(n):
        img = Image.new("RGB", (56, 48), (120, 120, 120))
        gt = Image.new("L", (56, 48), 0)
        present = sorted({int(c) for c in rng.integers(0, 3, 2)})
        for c in present:
            x, y = int(rng.integers(4, 30)), int(rng.integers(4, 22))
            box = [x, y, x + 20, y + 20]
            for im, fill in ((img, colours[c]), (gt, c + 1)):
                d = ImageDraw.Draw(im)
                if c == 0:
                    d.ellipse(box, fill=fill)
                elif c == 1:
                    d.rectangle(box, fill=fill)
                else:
                    d.polygon([(x, y + 20), (x + 20, y + 20), (x + 10, y)], fill=fill)
        img.save(root / f"img{i}.jpg")
        gt.save(root / "SegmentationClass" / f"img{i}.png")
        rows.append(f"img{i}.jpg,{';'.join(names[c] for c in present)}")
    (root / "labels.csv").write_text("\n".join(rows) + "\n")
    return root


def test_custom_three_class_folder_trains_and_evaluates_via_cli(tmp_path):
    from seam.cli import app

    folder = _three_class_folder(tmp_path / "shapes")
    out = tmp_path / "run"
    result = CliRunner().invoke(app, [
        "train", "seam", "--data", str(folder), "--backbone", "resnet38_small", "--crop", "48",
        "--batch-size", "2", "--epochs", "1", "--out", str(out), "--eval-scales", "1.0", "--threads", "1",
        "--seed", "1"])
    assert result.exit_code == 0, result.output
    side = json.loads((out / "seam_final.json").read_text())
    assert side["class_names"] == ["background", "disc", "square", "triangle"]
    assert side["dataset"]["kind"] == "folder" and side["num_classes"] == 4
    sd = torch.load(out / "seam_final.pth", weights_only=True)
    assert sd["fc8.weight"].shape[0] == 4
    ev = side["metrics"]["eval"]
    assert ev["num_images"] == 6 and set(ev["per_class"]) == set(side["class_names"])
    assert len(ev["curve"]) == 60 and 0 <= ev["best_threshold"] <= 0.59
    assert ev["mfn"] is None or ev["mfn"] >= 0
    assert "mIoU" in result.output


def test_cli_reports_user_errors(tmp_path):
    from seam.cli import app

    folder = _three_class_folder(tmp_path / "shapes", n=2)
    (folder / "labels.csv").write_text("img0.jpg,disc\nimg1.jpg,unicorn\n")
    r = CliRunner().invoke(app, ["train", "seam", "--data", str(folder), "--classes", "disc,square",
                                 "--out", str(tmp_path / "x")])
    assert r.exit_code == 2 and "unicorn" in r.output
    r = CliRunner().invoke(app, ["train", "seam", "--data", str(folder), "--transform", "shear",
                                 "--out", str(tmp_path / "x")])
    assert r.exit_code == 2 and "shear" in r.output
    r = CliRunner().invoke(app, ["train", "seam", "--data", str(tmp_path / "none"), "--out", str(tmp_path / "x")])
    assert r.exit_code == 2 and "not found" in r.output


def test_imagenet_params_initialisation_reports_the_new_layers(tiny_synth, tmp_path):
    src = create_model("seam", "resnet38_small", 21)
    named = {torch_to_mxnet(k): v.numpy().copy() for k, v in src.state_dict().items()
             if not k.endswith("num_batches_tracked") and k.split(".")[0] not in ("fc8", "f8_3", "f8_4", "f9")}
    named["arg:linear1000_weight"] = np.zeros((1000, 4), np.float32)
    params = tmp_path / "ilsvrc-cls_rnn-38_1.params"
    write_params(params, named)
    logs = []
    side = train(_cfg(tiny_synth, tmp_path / "inet", epochs=1, weights=str(params)), log=logs.append)
    init = side["training"]["initialisation"]
    assert init["format"] == "mxnet" and "bn_calibration_images" not in init  # ImageNet BN stats kept
    assert sorted(init["missing"]) == ["f8_3.weight", "f8_4.weight", "f9.weight", "fc8.weight"]
    assert any("uninitialised" in m and "fc8" in m for m in logs)
    trained = _weights(tmp_path / "inet")
    assert torch.equal(trained["conv1a.weight"], src.state_dict()["conv1a.weight"])  # frozen
    assert torch.equal(trained["b4.bn_branch2a.running_var"], src.state_dict()["b4.bn_branch2a.running_var"])
