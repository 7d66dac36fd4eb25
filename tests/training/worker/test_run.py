"""run_training's stops without a full training: a spent budget fails it at the next step
(checkpoints kept, the reason in the status and the log), a cancel asked before the start
cancels it, a finished training called again is left as it is, and a training another
process holds (its lock) is not run twice."""
from __future__ import annotations

import fcntl
import os
from pathlib import Path

import pytest
from seam.training.data.synth import generate
from seam.training.worker import AlreadyRunning, TrainingSpec, run_training
from seam.training.worker.run import LOCK_FILE

from seam.modelrepo.trainings import read_status, request_cancel

pytestmark = pytest.mark.slow  # starts a SEAM training (small backbone) for the budget


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("synth")
    generate(root, n=8, seed=2, size=48)
    return root


def _spec(synth: Path, tmp_path: Path, **kw) -> TrainingSpec:
    return TrainingSpec.model_validate({
        "name": "t", "data": {"root": str(synth)}, "models_dir": str(tmp_path / "models"),
        "recipe": {"backbone": "resnet38_small", "epochs": 1, "batch_size": 2, "crop": 48}, **kw})


def test_budget_cancel_terminal_and_lock(synth: Path, tmp_path: Path) -> None:
    seen = []
    res = run_training(_spec(synth, tmp_path, budget_s=0.01), tmp_path / "a", seen.append)
    assert res.state == "failed" and "budget" in (res.error or ""), res
    st = read_status(tmp_path / "a")
    assert st is not None and st.state == "failed" and st.attempts == 1 and seen and seen[-1].state == "failed"
    assert "time budget" in (tmp_path / "a" / "log.txt").read_text()
    assert not (tmp_path / "models").exists()  # nothing published

    again = run_training(_spec(synth, tmp_path), tmp_path / "a")  # terminal: left as it is
    assert again.state == "failed" and read_status(tmp_path / "a").attempts == 1

    (tmp_path / "b").mkdir()
    request_cancel(tmp_path / "b")
    assert run_training(_spec(synth, tmp_path), tmp_path / "b").state == "cancelled"

    (tmp_path / "c").mkdir()
    fd = os.open(tmp_path / "c" / LOCK_FILE, os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        with pytest.raises(AlreadyRunning):
            run_training(_spec(synth, tmp_path), tmp_path / "c")
    finally:
        os.close(fd)
