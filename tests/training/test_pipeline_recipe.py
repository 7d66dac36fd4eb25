"""`seam pipeline` runs every stage with its recipe's settings unless an option is given:
on VOC data the release (DeepLab batch 10, 20000 iterations, BN statistics per 5 images,
fp32, CRF at test); given options win, are printed as overrides and recorded."""
import json
import re

import pytest
from seam.training.pipeline import PipelineConfig, PipelineRun, StageHooks
from typer.testing import CliRunner

from seam.cli import app
from tests.training.helpers import voc_layout


@pytest.fixture(scope="module")
def voc(tmp_path_factory):
    return voc_layout(tmp_path_factory.mktemp("data") / "VOC2012", n=12, size=64)


def _plan(voc, tmp_path, **given):
    data, labels, train_list = voc
    cfg = PipelineConfig(data=str(data), out=str(tmp_path / "run"), labels=str(labels), train_list=str(train_list),
                         backbone="resnet38_small", **given)
    lines: list[str] = []
    run = PipelineRun(cfg, StageHooks(log=lines.append))
    return run, run.plan(), "\n".join(lines)


def test_no_options_run_the_release_recipe_of_every_stage(voc, tmp_path):
    run, plan, log = _plan(voc, tmp_path)
    assert run.ds.kind == "voc" and run.recipe == run.deeplab_recipe == "release"
    seam, aff, dl = (run.stage_config(n) for n in ("seam", "affinity", "deeplab"))
    for c in (seam, aff):
        assert (c.batch_size, c.epochs, c.lr, c.crop, c.amp, c.effective_momentum) == (8, 8, 0.01, 448, False, 5e-4)
    assert (dl.batch_size, dl.max_iterations, dl.lr, dl.crop, dl.amp, dl.bn_mode, dl.bn_group) == (
        10, 20000, 1e-3, 448, False, "authors", 5)
    assert run.cfg.seg_crf  # the authors' test protocol
    assert all(plan[n]["exact"] and plan[n]["name"] == "release" for n in ("seam", "affinity", "deeplab")), plan
    assert log.count("(exact)") == 3 and "overridden" not in log
    assert "batch 10, 20000 iterations" in log and "statistics per 5 images" in log and "dense CRF" in log


def test_given_options_win_and_are_reported(voc, tmp_path):
    run, plan, log = _plan(voc, tmp_path, batch_size=4, crop=64, deeplab_epochs=1, amp=True, seg_crf=False)
    dl = run.stage_config("deeplab")
    assert (dl.batch_size, dl.crop, dl.epochs, dl.max_iterations, dl.amp) == (4, 64, 1, None, True)
    assert plan["deeplab"]["settings"]["batch_size"] == 10  # the recipe's value is kept beside the override
    assert plan["deeplab"]["overrides"] == {"batch_size": 4, "crop": 64, "amp": True, "epochs": 1,
                                            "max_iterations": None}
    assert plan["seam"]["overrides"] == {"batch_size": 4, "crop": 64, "amp": True}
    assert "overridden: batch_size=4" in log and "1 epochs as given, instead of the recipe's 20000 iterations" in log
    assert "no CRF" in log


def test_cli_passes_no_defaults_over_the_recipe(voc, tmp_path, monkeypatch):
    """The CLI's own defaults are 'not given' (None), never values that would override the recipe."""
    import seam.training.pipeline

    seen = {}

    def fake_run(cfg, hooks):
        seen["cfg"] = cfg
        return {}

    monkeypatch.setattr(seam.training.pipeline, "run_pipeline", fake_run)
    data, labels, train_list = voc
    r = CliRunner().invoke(app, ["pipeline", "--data", str(data), "--out", str(tmp_path / "r"), "--labels",
                                 str(labels), "--train-list", str(train_list)])
    assert r.exit_code == 0, r.output
    cfg = seen["cfg"]
    assert (cfg.batch_size, cfg.crop, cfg.seam_epochs, cfg.aff_epochs, cfg.deeplab_epochs, cfg.amp) == (None,) * 6
    assert cfg.seg_crf is True
    r = CliRunner().invoke(app, ["pipeline", "--data", str(data), "--out", str(tmp_path / "r"), "--batch-size", "6",
                                 "--no-seg-crf", "--no-amp"])
    assert r.exit_code == 0, r.output
    assert (seen["cfg"].batch_size, seen["cfg"].seg_crf, seen["cfg"].amp) == (6, False, False)


def test_help_shows_the_recipe_values():
    """typer's rich help swallows '[...]' as markup: the recipe values must survive in --help."""
    out = CliRunner().invoke(app, ["pipeline", "--help"], terminal_width=200).output
    assert "(recipe: SEAM / AffinityNet 8; DeepLab release 10, tuned 8)" in out
    assert "(recipe: release off, tuned on with CUDA)" in out
    for cmd in (["train", "seam"], ["train", "affinity"], ["train", "deeplab"]):
        out = CliRunner().invoke(app, [*cmd, "--help"], terminal_width=200).output
        assert "(recipe:" in out and not re.search(r"[a-z] \.(\s|$)", out), cmd  # no "Epochs ." left


@pytest.mark.slow  # trains three tiny networks
def test_pipeline_sidecars_record_recipe_and_overrides(voc, tmp_path):
    pytest.importorskip("pydensecrf")
    data, labels, train_list = voc
    out = tmp_path / "run"
    r = CliRunner().invoke(app, [
        "pipeline", "--data", str(data), "--out", str(out), "--labels", str(labels), "--train-list", str(train_list),
        "--backbone", "resnet38_small", "--crop", "80", "--batch-size", "4", "--seam-epochs", "1", "--aff-epochs", "1",
        "--deeplab-epochs", "1", "--cam-scales", "1.0", "--seg-scales", "1.0", "--device", "cpu"])
    assert r.exit_code == 0, r.output
    dl = json.loads((out / "deeplab" / "deeplab_final.json").read_text())
    assert dl["recipe"]["name"] == "release" and dl["recipe"]["settings"]["batch_size"] == 10
    assert dl["recipe"]["settings"]["max_iterations"] == 20000
    assert dl["recipe"]["overrides"] == {"batch_size": 4, "crop": 80, "epochs": 1, "max_iterations": None}
    assert dl["config"]["bn_group"] == 5 and dl["config"]["amp"] is False
    seam = json.loads((out / "seam" / "seam_final.json").read_text())
    assert seam["recipe"]["overrides"] == {"batch_size": 4, "crop": 80, "epochs": 1}
    res = json.loads((out / "results.json").read_text())
    assert res["plan"]["deeplab"] == dl["recipe"] and res["stages"]["deeplab"]["recipe"] == dl["recipe"]
    assert len(list((out / "aff_labels").glob("*.npz"))) == len(list((out / "aff_labels").glob("*.png"))) > 0
