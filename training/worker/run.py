"""`run_training(spec, workdir, progress)`: one training, start to published version.

    data (dataset/, split/) -> the stages (run/, resumed from checkpoints) -> export (export/,
    parity-checked) -> evaluation on the held-out split (the new and the promoted version) ->
    publish as NAME:<n+1> (promoted when asked and not worse) -> status.json "succeeded"

Called again on the same workdir it continues: the trainers resume from their last epoch
checkpoint, finished stages are skipped. A workdir whose status is terminal is left as it
is (a redelivered task does nothing twice), and one that another process is running
(its lock held) too. The embedded service, `seam trainer` and the corrections loop all call it.
While it holds the lock a thread writes the training's heartbeat every SEAM_TRAINING_HEARTBEAT_S
(default 10 s): a service that sees it stop sends the training again (service/trainings/runner.py),
so a dead trainer host's training resumes on another trainer long before the broker gives it back.
"""
from __future__ import annotations

import fcntl
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from seam.training.worker.data import PreparedData, disk_usage, prepare_data
from seam.training.worker.evaluate import evaluate_dirs
from seam.training.worker.publish import base_checkpoints, export_kinds, publish
from seam.training.worker.stages import StageReport, Stopped, run_stages
from seam.training.worker.status import Progress, Tracker

from seam.modelrepo.trainings import (
    HEARTBEAT_FILE,
    Evaluation,
    TrainingResult,
    TrainingSpec,
    read_status,
    write_spec,
    write_time,
)
from seam.modelrepo.versions import ModelVersion, list_models

RUN_DIR, EXPORT_DIR, LOCK_FILE = "run", "export", ".lock"


class AlreadyRunning(RuntimeError):
    """Another process holds the training's lock."""


@contextmanager
def _locked(workdir: Path) -> Iterator[None]:
    """An exclusive lock on the workdir, released when the process ends (however it ends)."""
    fd = os.open(workdir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise AlreadyRunning(f"{workdir} is being trained by another process") from None
        yield
    finally:
        os.close(fd)


@contextmanager
def _beating(workdir: Path) -> Iterator[None]:
    """The heartbeat of a training this process holds, written now and then every interval."""
    interval = float(os.environ.get("SEAM_TRAINING_HEARTBEAT_S") or 10)
    stop = threading.Event()

    def beat() -> None:
        while True:
            with suppress(OSError):  # a full or flaky disk must not stop the training; the next beat retries
                write_time(workdir, HEARTBEAT_FILE)
            if stop.wait(interval):
                return

    thread = threading.Thread(target=beat, name="training-heartbeat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def models_dir(spec: TrainingSpec) -> Path:
    return Path(spec.models_dir or os.environ.get("SEAM_MODELS_DIR") or "models")


def _result(tracker: Tracker) -> TrainingResult:
    s = tracker.status
    return TrainingResult(state=s.state, model=s.model, version=s.version, promoted=s.promoted,
                          evaluation=s.evaluation, error=s.error, seconds=s.elapsed_s)


def run_training(spec: TrainingSpec, workdir: Path, progress: Progress | None = None) -> TrainingResult:
    """Run (or continue) the training `spec` in `workdir`; never raises for a failed training
    (the result and status.json say why), only AlreadyRunning."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    if not (workdir / "spec.json").is_file():
        write_spec(workdir, spec)
    earlier = read_status(workdir)
    if earlier is not None and earlier.terminal:
        return TrainingResult(state=earlier.state, model=earlier.model, version=earlier.version,
                              promoted=earlier.promoted, evaluation=earlier.evaluation, error=earlier.error,
                              seconds=earlier.elapsed_s)
    with _locked(workdir), _beating(workdir):
        tracker = Tracker(workdir, spec, progress)
        tracker.start(resumed=any((workdir / RUN_DIR).glob("*/checkpoint.pth")))
        try:
            _train(spec, workdir, tracker)
            tracker.finish("succeeded")
        except Stopped as stop:
            tracker.finish("cancelled" if stop.reason == "cancelled" else "failed", str(stop))
        except Exception as exc:  # noqa: BLE001 - any failure is the training's state, with its reason
            tracker.log_exception(exc)
            tracker.finish("failed", f"{type(exc).__name__}: {exc}" if not isinstance(exc, ValueError) else str(exc))
        return _result(tracker)


def _train(spec: TrainingSpec, workdir: Path, tracker: Tracker) -> None:
    repo = models_dir(spec)
    tracker.check()
    tracker.report(StageReport("data"))
    batch = spec.recipe.batch_size or 8
    data = prepare_data(spec, workdir, min_train=batch)
    tracker.log(f"data: {data.num_train} training images, {len(data.heldout)} held out with ground truth, "
                f"classes {', '.join(data.class_names[1:])}")
    weights, base = _base_weights(spec, repo, tracker)
    finals = run_stages(spec, data, workdir / RUN_DIR, weights, tracker.report, tracker.log)
    _check_disk(spec, workdir)
    tracker.report(StageReport("export"))
    dirs = export_kinds(finals, workdir / EXPORT_DIR, tracker.log)
    if base is not None and spec.stages == "deeplab":  # the base's other kinds complete the version
        dirs = {k: base.dirs[k] for k in base.dirs if k not in dirs} | dirs
    tracker.report(StageReport("evaluation"))
    evaluation, promote, note = decide(spec, repo, dirs, data, tracker)
    tracker.status.evaluation = evaluation
    tracker.report(StageReport("publish"))
    version = publish(repo, spec.name, dirs, finals, promote, note=f"training {workdir.name}")
    s = tracker.status
    s.model, s.version = version.name, version.version
    s.promoted = list_models(repo)[version.name].promoted == version.version
    s.promote_note = note
    s.checkpoint = str(version.path / ".checkpoints")
    tracker.log(f"published {version.ref}" + (" (promoted)" if s.promoted else " (not promoted)") + f": {note}")


def _base_weights(spec: TrainingSpec, repo: Path, tracker: Tracker) -> tuple[str | None, ModelVersion | None]:
    """The checkpoint the stages start from: the base model's (its DeepLab for a DeepLab-only
    training, else its SEAM), or None (ImageNet-free random init)."""
    if spec.base_model is None:
        if spec.stages == "deeplab":
            raise ValueError("stages 'deeplab' trains DeepLab alone: it needs a base_model to start from")
        return None, None
    base, found = base_checkpoints(repo, spec.base_model)
    pick = found.get("deeplab") if spec.stages == "deeplab" else None
    pick = pick or found.get("seam") or next(iter(found.values()))
    tracker.log(f"fine-tuning from {base.ref} ({pick.name})")
    return str(pick), base


def _check_disk(spec: TrainingSpec, workdir: Path) -> None:
    used = disk_usage(workdir)
    if used > spec.max_disk_bytes:
        raise ValueError(f"the training's files take {used} bytes; the limit is {spec.max_disk_bytes}")


def decide(spec: TrainingSpec, repo: Path, dirs: dict[str, Path], data: PreparedData,
           tracker: Tracker) -> tuple[Evaluation, bool, str]:
    """The held-out evaluation of the new models and of the promoted version, and whether to
    promote: asked, and not worse on the same images (the first version of a name is promoted
    by the repository anyway)."""
    items = data.heldout_items()
    entry = list_models(repo).get(spec.name) if repo.is_dir() else None
    current = entry.get() if entry is not None and entry.promoted is not None else None
    ev = Evaluation(split=[i for i, *_ in items], promoted_ref=current.ref if current else None)
    if not items:
        ev.note = "no held-out images with ground truth: nothing scored"
    else:
        t = time.time()
        score, what = evaluate_dirs(dirs, items, data.class_names)
        ev.new, ev.metric = round(score, 3), f"miou ({what})"
        if current is not None:
            try:
                old, old_what = evaluate_dirs(current.dirs, items, data.class_names)
                ev.promoted, ev.comparable = round(old, 3), True
                ev.metric = f"miou (new: {what}; promoted: {old_what})"
            except ValueError as exc:
                ev.note = f"the promoted version is not comparable: {exc}"
        tracker.log(f"held-out {ev.metric} on {len(items)} images: new {ev.new}%, promoted "
                    f"{ev.promoted_ref or '-'} {ev.promoted if ev.promoted is not None else '-'}% "
                    f"({time.time() - t:.1f} s)")
    if current is None:
        return ev, True, "the first version of this name (promoted by the repository)"
    if not spec.promote:
        return ev, False, "promotion not asked"
    if not ev.comparable or ev.new is None or ev.promoted is None:
        return ev, False, f"not promoted: no comparable evaluation ({ev.note or 'no scores'})"
    if ev.new < ev.promoted:
        return ev, False, f"not promoted: held-out mIoU {ev.new}% is worse than {current.ref}'s {ev.promoted}%"
    return ev, True, f"promoted: held-out mIoU {ev.new}% >= {current.ref}'s {ev.promoted}%"
