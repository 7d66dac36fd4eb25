"""Synthetic VOC-layout dataset: layout, determinism, labels, difficulty."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from seam.training.data.synth import SYNTH_CLASSES, generate
from typer.testing import CliRunner

from seam.cli import app
from seam.common.files import load_label_file

N, SIZE = 24, 64


@pytest.fixture(scope="module")
def ds(tmp_path_factory):
    return generate(tmp_path_factory.mktemp("synth") / "a", n=N, seed=7, size=SIZE, val_fraction=0.25)


def _gt(info, iid):
    img = Image.open(info.label_dir / f"{iid}.png")
    assert img.mode == "P"
    return np.asarray(img)


def test_layout(ds):
    root = ds.root
    for rel in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation/train.txt",
                "ImageSets/Segmentation/val.txt", "cls_labels.npy", "classes.txt"):
        assert (root / rel).exists(), rel
    train = (root / "ImageSets/Segmentation/train.txt").read_text().split()
    val = (root / "ImageSets/Segmentation/val.txt").read_text().split()
    assert len(train) == 18 and len(val) == 6 and not set(train) & set(val)
    assert train[0] == "synth_000001"
    assert (root / "classes.txt").read_text().split() == list(SYNTH_CLASSES)
    for iid in train + val:
        rgb = Image.open(root / "JPEGImages" / f"{iid}.jpg")
        assert rgb.mode == "RGB" and rgb.size == (SIZE, SIZE)
        assert _gt(ds, iid).shape == (SIZE, SIZE)


def test_deterministic(ds, tmp_path):
    again = generate(tmp_path / "b", n=N, seed=7, size=SIZE)
    other = generate(tmp_path / "c", n=N, seed=8, size=SIZE)
    diff = 0
    for iid in ds.ids:
        a = (ds.label_dir / f"{iid}.png").read_bytes()
        assert a == (again.label_dir / f"{iid}.png").read_bytes()
        assert (ds.image_dir / f"{iid}.jpg").read_bytes() == (again.image_dir / f"{iid}.jpg").read_bytes()
        diff += a != (other.label_dir / f"{iid}.png").read_bytes()
    assert diff > N // 2


def test_cls_labels_match_masks(ds):
    table = np.load(ds.cls_labels, allow_pickle=True).item()
    assert set(table) == set(ds.ids)
    num_fg = len(SYNTH_CLASSES) - 1
    n_classes = []
    for iid in ds.ids:
        vec = table[iid]
        assert vec.dtype == np.float32 and vec.shape == (num_fg,)
        gt = _gt(ds, iid)
        assert set(np.unique(gt)) <= set(range(len(SYNTH_CLASSES))) | {255}
        in_mask = {int(v) - 1 for v in np.unique(gt) if 0 < v < 255}
        assert in_mask == set(np.flatnonzero(vec).tolist())
        assert in_mask, f"{iid} has no foreground"
        n_classes.append(len(in_mask))
    assert np.mean(n_classes) > 1.3
    # the project's own loader reads it with the synthetic class list
    assert load_label_file(ds.cls_labels, SYNTH_CLASSES[1:])[ds.ids[0]] == sorted(
        {int(v) - 1 for v in np.unique(_gt(ds, ds.ids[0])) if 0 < v < 255})


def test_ignore_band_and_occlusion(ds):
    gt = _gt(ds, ds.ids[0])
    fg = (gt > 0) & (gt < 255)
    # every foreground pixel touching background through a 4-neighbour must not exist: the band separates them
    assert not np.any(fg[:, 1:] & (gt[:, :-1] == 0)) and not np.any(fg[:, :-1] & (gt[:, 1:] == 0))
    assert np.any(gt == 255)
    objects = [o for objs in ds.objects.values() for o in objs]
    assert all(o.visible <= o.shown <= o.area for o in objects)
    hidden = [o for o in objects if o.shown < 0.9 * o.area]
    assert len(hidden) >= len(objects) // 5, "objects should often be partly hidden"
    # and GT agrees with the bookkeeping: visible pixels are labelled with the object's class
    for iid, objs in ds.objects.items():
        gt = _gt(ds, iid)
        for cls in {o.cls for o in objs}:
            assert np.count_nonzero(gt == cls + 1) <= sum(o.visible for o in objs if o.cls == cls)


def test_all_classes_and_colours_differ(tmp_path):
    info = generate(tmp_path / "d", n=40, seed=1, size=SIZE)
    table = np.load(info.cls_labels, allow_pickle=True).item()
    assert np.stack(list(table.values())).sum(0).min() >= 3  # every class appears
    # mean colour per class in the images differs (colour is a cue)
    means = []
    for c in range(1, len(SYNTH_CLASSES)):
        px = [np.asarray(Image.open(info.image_dir / f"{i}.jpg"))[_gt(info, i) == c] for i in info.ids]
        means.append(np.concatenate(px).mean(0))
    d = np.linalg.norm(np.asarray(means)[:, None] - np.asarray(means)[None], axis=-1)
    assert d[~np.eye(len(means), dtype=bool)].min() > 30


def test_cli(tmp_path):
    res = CliRunner().invoke(app, ["synth", "--out", str(tmp_path / "s"), "--n", "3", "--size", "48"])
    assert res.exit_code == 0, res.output
    assert len(list((tmp_path / "s" / "JPEGImages").glob("*.jpg"))) == 3
    bad = CliRunner().invoke(app, ["synth", "--out", str(tmp_path / "s"), "--n", "0"])
    assert bad.exit_code == 2 and "Traceback" not in bad.output
