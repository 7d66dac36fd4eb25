"""`seam pipeline` end to end on a tiny synthetic set: every stage, the results file, skipping."""
import json

import pytest
from seam.training.data.synth import generate
from seam.training.pipeline import PipelineConfig, StageHooks, run_pipeline
from typer.testing import CliRunner

from seam.cli import app

STAGES = ("seam", "cams", "aff_labels", "affinity", "rw", "deeplab", "segment")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth")
    generate(root, n=10, seed=1, size=80)
    return root


@pytest.mark.slow  # trains and runs every stage of the pipeline
def test_pipeline_runs_every_stage_and_skips_finished_ones(tmp_path, data):
    pytest.importorskip("pydensecrf")
    cfg = PipelineConfig(data=str(data), out=str(tmp_path / "run"), backbone="resnet38_small", batch_size=4,
                         crop=80, seam_epochs=1, aff_epochs=1, deeplab_epochs=1, cam_scales=(1.0,),
                         seg_scales=(1.0,))
    lines: list[str] = []
    res = run_pipeline(cfg, StageHooks(log=lines.append))
    run = tmp_path / "run"
    for name in ("seam/seam_final.pth", "affinity/affinity_final.pth", "deeplab/deeplab_final.pth",
                 "rw/classes.txt", "results.json"):
        assert (run / name).is_file(), name
    n_train = len(list((data / "ImageSets" / "Segmentation" / "train.txt").read_text().split()))
    for d, ext in (("cams", "npy"), ("aff_labels", "png"), ("rw", "png")):
        assert len(list((run / d).glob(f"*.{ext}"))) == n_train
    assert len(list((run / "segment").glob("*.png"))) == 10
    assert set(res["stages"]) == set(STAGES)
    assert {"cam_train", "rw_train", "deeplab_train", "deeplab_val"} <= set(res["miou"])
    assert [r["split"] for r in res["table"]][-1] == "val"
    assert all(0 <= r["miou"] <= 100 for r in res["table"])
    saved = json.loads((run / "results.json").read_text())
    assert saved["miou"]["rw_train"]["miou"] == res["miou"]["rw_train"]["miou"]

    # a second run finds every output and only re-scores; a lost output is redone alone
    (run / "rw" / sorted(p.name for p in (run / "rw").glob("*.png"))[0]).unlink()
    lines.clear()
    res2 = run_pipeline(cfg, StageHooks(log=lines.append))
    assert res2["stages"]["rw"]["written"] == 1
    for name in ("seam", "cams", "aff_labels", "affinity", "deeplab", "segment"):
        assert res2["stages"][name].get("reused"), name
    assert res2["miou"]["cam_train"] == res["miou"]["cam_train"]
    assert any("SEAM" in m and "skipped" in m for m in lines)


def test_pipeline_cli_reports_bad_data(tmp_path):
    res = CliRunner().invoke(app, ["pipeline", "--data", str(tmp_path / "missing"), "--out", str(tmp_path / "r")])
    assert res.exit_code != 0 and "not found" in res.output
