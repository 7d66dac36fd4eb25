"""The training-job protocol shared by the API and the trainer: spec validation, status.json
written atomically and read back (never a crash on a bad file), log lines, the cancel file."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from seam.modelrepo.trainings import (
    HEARTBEAT_FILE,
    REQUEUED_FILE,
    TrainingSpec,
    TrainingStatus,
    append_log,
    cancel_requested,
    read_spec,
    read_status,
    read_time,
    request_cancel,
    trainer_gone,
    training_queue,
    write_spec,
    write_status,
    write_time,
)


def _spec(**kw) -> TrainingSpec:
    return TrainingSpec.model_validate({"name": "shapes", "data": {"root": "/d"}, **kw})


def test_spec_validation() -> None:
    s = _spec(classes=[" disc", "ring "], stages="seam+rw", recipe={"backbone": "resnet38_small", "crop": 64})
    assert s.classes == ["disc", "ring"] and s.recipe.crop == 64 and not s.promote
    for bad in ({"name": "../x"}, {"classes": ["a", "a"]}, {"classes": ["background", "a"]}, {"stages": "rw"},
                {"recipe": {"crop": 63}}, {"budget_s": 0}, {"unknown": 1}, {"heldout_fraction": 1.0}):
        with pytest.raises(ValidationError):
            _spec(**bad)
    assert training_queue("seam") == "seam-training"


def test_spec_and_status_files(tmp_path: Path) -> None:
    write_spec(tmp_path, _spec(budget_s=60))
    assert read_spec(tmp_path).budget_s == 60
    assert read_status(tmp_path) is None
    st = TrainingStatus(state="running", stage="SEAM", epoch=1, epochs=2, step=3, steps=10, loss=0.5)
    write_status(tmp_path, st)
    back = read_status(tmp_path)
    assert back is not None and back.step == 3 and not back.terminal
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temp file left
    (tmp_path / "status.json").write_text("{not json")
    assert read_status(tmp_path) is None
    (tmp_path / "spec.json").write_text(json.dumps({"name": "x"}))
    with pytest.raises(ValueError, match="invalid training spec"):
        read_spec(tmp_path)


def test_log_and_cancel(tmp_path: Path) -> None:
    append_log(tmp_path, "one\ntwo")
    append_log(tmp_path, "x" * 5000)
    lines = (tmp_path / "log.txt").read_text().splitlines()
    assert len(lines) == 2 and lines[0].endswith("one two") and len(lines[1]) < 2100
    assert not cancel_requested(tmp_path)
    request_cancel(tmp_path)
    assert cancel_requested(tmp_path)


def test_trainer_gone_by_heartbeat_and_resend(tmp_path: Path) -> None:
    assert not trainer_gone(tmp_path, 60, now=1000.0)  # no heartbeat yet: not judged
    write_time(tmp_path, HEARTBEAT_FILE, 1000.0)
    assert read_time(tmp_path, HEARTBEAT_FILE) == 1000.0
    assert not trainer_gone(tmp_path, 60, now=1059.0)
    assert trainer_gone(tmp_path, 60, now=1061.0)
    write_time(tmp_path, REQUEUED_FILE, 1061.0)  # sent again: not again while nobody took it
    assert not trainer_gone(tmp_path, 60, now=5000.0)
    write_time(tmp_path, HEARTBEAT_FILE, 1100.0)  # a trainer took it and beat, then died too
    assert not trainer_gone(tmp_path, 60, now=1150.0)
    assert trainer_gone(tmp_path, 60, now=1161.0)
    (tmp_path / HEARTBEAT_FILE).write_text("garbage")
    assert read_time(tmp_path, HEARTBEAT_FILE) is None and not trainer_gone(tmp_path, 60, now=9999.0)
