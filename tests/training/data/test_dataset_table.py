"""The data set table is the one place a dataset kind is declared: a toy kind registered in
it (and nowhere else) is detected by `--dataset auto`, loaded by every trainer's
`build_dataset`, gets its own default recipe, and is listed and accepted by the CLI's
--dataset of `seam train seam`, `seam train affinity` and `seam pipeline`."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from seam.training.data import datasets as D
from seam.training.data.synth import generate
from typer.main import get_command
from typer.testing import CliRunner

from seam.cli import app

TOY_MARKER = "toy.txt"


def _load_toy(request: D.DatasetRequest) -> D.ImageLabelSet:
    """A synth set under another name: the toy layout is a synth set plus toy.txt."""
    return dataclasses.replace(D.load_synth(request.data, request.train_list, request.labels,
                                            check_images=request.check_images), kind="toy")


@pytest.fixture
def toy_kind():
    """The toy kind in the table, detected before synth (whose detector also claims the layout);
    the table as it was afterwards."""
    saved = dict(D.DATASETS)
    kind = D.register_dataset(D.DatasetKind("toy", "a synth set with toy.txt", _load_toy,
                                            lambda root: (root / TOY_MARKER).is_file(),
                                            {"seam": "tuned", "affinity": "tuned"}), before="synth")
    yield kind
    D.DATASETS.clear()
    D.DATASETS.update(saved)


@pytest.fixture(scope="module")
def toy_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("toy")
    generate(root, n=6, seed=0, size=32)
    (root / TOY_MARKER).write_text("toy\n")
    return root


def test_a_registered_kind_is_detected_loaded_and_given_its_recipe(toy_kind, toy_root):
    assert D.dataset_choices() == ("auto", "toy", "synth", "voc", "folder")
    assert D.detect_dataset_kind(toy_root) == "toy"
    for kind in ("auto", "toy"):
        ds = D.build_dataset(kind, toy_root)
        assert ds.kind == "toy" and len(ds) > 0 and ds.class_names[0] == "background"
    assert D.default_recipe("toy") == "tuned" and D.default_recipe("toy", "deeplab") == "release"


def test_the_table_is_restored_after_the_toy(toy_root):
    assert "toy" not in D.DATASETS and D.detect_dataset_kind(toy_root) == "synth"
    with pytest.raises(D.DatasetError, match="unknown dataset kind 'toy'"):
        D.build_dataset("toy", toy_root)


def test_registering_a_taken_name_fails():
    with pytest.raises(ValueError, match="already taken"):
        D.register_dataset(D.DatasetKind("voc", "again", _load_toy))
    with pytest.raises(ValueError, match="already taken"):
        D.register_dataset(D.DatasetKind("auto", "the detection keyword", _load_toy))


def _fresh_command(monkeypatch, *path: str) -> None:
    """Config commands are built once per process (on first use): forget the built one, as a
    new process would, so the options are read from the table as it is now."""
    cmd = get_command(app)
    for name in path:
        cmd = cmd.commands[name]
    monkeypatch.setattr(cmd, "_real", None)


@pytest.mark.parametrize("path", [("train", "seam"), ("train", "affinity"), ("pipeline",)])
def test_the_cli_lists_and_accepts_a_registered_kind(toy_kind, monkeypatch, path):
    _fresh_command(monkeypatch, *path)
    r = CliRunner().invoke(app, [*path, "--help"], env={"COLUMNS": "200", "NO_COLOR": "1"})
    assert r.exit_code == 0, r.output
    assert "<auto|toy|synth|voc|folder>" in r.output


def test_the_cli_trains_a_registered_kind_with_its_default_recipe(toy_kind, toy_root, monkeypatch, tmp_path):
    """`seam train seam --dataset auto` on the toy layout: the trainer gets the toy kind's
    recipe (tuned) and its data loads as toy; the training itself is replaced."""
    from seam.training.trainers import seam

    _fresh_command(monkeypatch, "train", "seam")
    seen = {}

    def fake_train(cfg, on_progress=None, log=None):
        seen["recipe"], seen["kind"] = cfg.recipe, D.build_dataset(cfg.dataset, cfg.data).kind
        return {}

    monkeypatch.setattr(seam, "train", fake_train)
    r = CliRunner().invoke(app, ["train", "seam", "--data", str(toy_root), "--out", str(tmp_path / "run")])
    assert r.exit_code == 0, r.output
    assert seen == {"recipe": "tuned", "kind": "toy"}
