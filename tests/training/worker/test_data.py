"""A training's data made uniform (seam.training.worker.data): a synth set and a user's folder
(images + labels.csv + some ground truth) become dataset/ + split/; the held-out split is
deterministic, drawn from the images with ground truth and never in the training list; the
spec's classes fix the order; the bounds refuse."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from seam.training.data.datasets import build_dataset
from seam.training.data.synth import generate
from seam.training.worker.data import DataError, prepare_data

from seam.modelrepo.trainings import TrainingSpec


def _spec(root: Path, **kw) -> TrainingSpec:
    return TrainingSpec.model_validate({"name": "t", "data": {"root": str(root)}, **kw})


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("synth")
    generate(root, n=10, seed=3, size=48)
    return root


def test_synth_set_split(synth: Path, tmp_path: Path) -> None:
    a = prepare_data(_spec(synth, heldout_fraction=0.3), tmp_path / "a", min_train=4)
    b = prepare_data(_spec(synth, heldout_fraction=0.3), tmp_path / "b", min_train=4)
    assert a.heldout == b.heldout and len(a.heldout) == 3  # deterministic, 30 % of the 10 with ground truth
    train = a.train_list.read_text().split()
    assert not set(train) & set(a.heldout) and len(train) == 7 == a.num_train
    ds = build_dataset("folder", a.root, a.train_list)  # what the trainers read
    assert ds.ids == train and ds.class_names == a.class_names and ds.gt_dir is not None
    items = a.heldout_items()
    assert [i for i, *_ in items] == a.heldout and all(g.is_file() and im.is_file() for _, im, g, _t in items)
    assert (a.root / "images" / f"{train[0]}.jpg").is_symlink()  # nothing copied


def test_folder_with_labels_classes_and_bounds(synth: Path, tmp_path: Path) -> None:
    src = tmp_path / "user"
    (src / "images").mkdir(parents=True)
    names = ["disc", "square", "triangle", "ring", "cross"]
    table = np.load(synth / "cls_labels.npy", allow_pickle=True).item()
    rows = ["image,labels"]
    for iid, vec in sorted(table.items()):
        (src / "images" / f"{iid}.jpg").write_bytes((synth / "JPEGImages" / f"{iid}.jpg").read_bytes())
        rows.append(f"{iid}.jpg,{';'.join(names[i] for i in np.flatnonzero(vec > 0.5))}")
    (src / "labels.csv").write_text("\n".join(rows) + "\n")
    d = prepare_data(_spec(src, classes=list(reversed(names))), tmp_path / "w")
    assert d.class_names == ["background", *reversed(names)] and d.heldout == [] and d.gt_dir is None
    first = sorted(table)[0]
    want = sorted(names[::-1].index(names[i]) for i in np.flatnonzero(table[first] > 0.5))
    assert sorted(d.tags[first]) == want
    with pytest.raises(DataError, match="limit is 5"):
        prepare_data(_spec(src, max_images=5), tmp_path / "x")
    with pytest.raises(DataError, match="bytes"):
        prepare_data(_spec(src, max_disk_bytes=100), tmp_path / "y")
    with pytest.raises(DataError):
        prepare_data(_spec(tmp_path / "nothing"), tmp_path / "z")
