"""AffinityNet training end to end on a few synthetic images; `seam rw` on its output."""
import numpy as np
import pytest
import torch
from seam.training.data.synth import generate
from seam.training.label_dirs import write_affinity_labels
from seam.training.models.checkpoint import CheckpointError
from seam.training.trainers.affinity import AFFINITY_FINAL, AffinityTrainConfig, train_affinity
from typer.testing import CliRunner

from seam.cli import app
from seam.common.palette import label_to_pil


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth")
    info = generate(root, n=8, seed=0, size=80)
    return root, info


def _fake_cams(root, info, cam_dir):
    """CAMs from the ground truth, blurred: enough to make labels of every kind."""
    from seam.training.data.label_png import read_label_png

    from seam.common.cam import resize_bilinear

    cam_dir.mkdir(parents=True, exist_ok=True)
    for i in info.train_ids:
        gt = read_label_png(info.label_dir / f"{i}.png")
        classes = sorted(int(c) - 1 for c in np.unique(gt) if 0 < c < 255)
        d = {}
        for c in classes:
            m = (gt == c + 1).astype(np.float32)[None]
            small = resize_bilinear(m, (10, 10))
            d[c] = np.clip(resize_bilinear(small, gt.shape), 0, 1)[0]
        np.save(cam_dir / f"{i}.npy", d)


@pytest.mark.slow  # trains AffinityNet twice (resume) and runs the random walk
def test_labels_train_resume_and_rw(tmp_path, synth):
    root, info = synth
    cam_dir = tmp_path / "cams"
    _fake_cams(root, info, cam_dir)
    lab_dir = tmp_path / "aff_labels"
    items = [(i, info.image_dir / f"{i}.jpg") for i in info.train_ids]
    stats = write_affinity_labels(items, cam_dir, lab_dir, crf=False)
    assert stats["written"] == len(items) and stats["share"]["foreground"] > 0
    assert write_affinity_labels(items, cam_dir, lab_dir, crf=False)["written"] == 0  # resumable

    cfg = AffinityTrainConfig(data=str(root), labels=str(lab_dir), backbone="resnet38_small", batch_size=2,
                              epochs=2, crop=80, out=str(tmp_path / "aff"), stop_after=2, log_every=1)
    side = train_affinity(cfg, log=lambda m: None)
    assert side["training"]["stopped"] == "stop_after"
    mid = torch.load(tmp_path / "aff" / "checkpoint.pth", weights_only=True)["model"]
    cfg.stop_after, cfg.resume = None, True
    side = train_affinity(cfg, log=lambda m: None)
    n_iter = 2 * (len(items) // 2)
    assert side["training"]["completed"] and side["training"]["iterations"] == n_iter
    assert side["kind"] == "affinity" and side["class_names"][0] == "background"
    hist = side["metrics"]["history"]
    assert all(np.isfinite(h["loss"]) for h in hist) and set(hist[-1]) >= {"bg", "fg", "neg"}
    final = tmp_path / "aff" / AFFINITY_FINAL
    sd = torch.load(final, weights_only=True)
    for k in ("conv1a.weight", "b2.conv_branch2a.weight", "b3.bn_branch2a.weight", "b4.bn_branch2a.running_var"):
        assert torch.equal(sd[k], mid[k]), k  # frozen: conv1a, b2, every BN
    for k in ("b3.conv_branch2a.weight", "f8_5.weight", "f9.weight"):
        assert not torch.equal(sd[k], mid[k]), k  # trained

    # a different label set refuses to resume
    label_to_pil(np.zeros((80, 80), np.uint8)).save(lab_dir / f"{info.train_ids[0]}.png")
    with pytest.raises(CheckpointError, match="different data"):
        train_affinity(cfg, log=lambda m: None)

    out = tmp_path / "rw"
    res = CliRunner().invoke(app, ["rw", "--affinity", str(final), "--cams", str(cam_dir),
                                   "--images", str(info.image_dir), "--out", str(out)])
    assert res.exit_code == 0, res.output
    pngs = sorted(out.glob("*.png"))
    assert len(pngs) == len(items)  # val images have no CAMs: skipped
    assert (out / "classes.txt").read_text().splitlines()[0] == "background"
    dense = tmp_path / "rw_dense"
    res = CliRunner().invoke(app, ["rw", "--affinity", str(final), "--cams", str(cam_dir),
                                   "--images", str(info.image_dir), "--out", str(dense), "--dense"])
    assert res.exit_code == 0, res.output
    from seam.training.data.label_png import read_label_png

    same = np.mean([(read_label_png(p) == read_label_png(dense / p.name)).mean() for p in pngs])
    assert same >= 0.999


def test_train_affinity_cli_errors(tmp_path, synth):
    root, _ = synth
    res = CliRunner().invoke(app, ["train", "affinity", "--data", str(root), "--labels", str(tmp_path / "nope"),
                                   "--backbone", "resnet38_small"])
    assert res.exit_code != 0 and "not found" in res.output
    res = CliRunner().invoke(app, ["train", "affinity", "--data", str(root), "--labels", str(tmp_path),
                                   "--crop", "84"])
    assert res.exit_code != 0 and "multiple of 8" in res.output
