"""The training's status as the trainer keeps it: status.json (atomic, at most every half
second while steps run, at once on a change of stage or state), log.txt, the time budget over
every attempt and the cancel file, polled at every report."""
from __future__ import annotations

import os
import time
import traceback
from collections.abc import Callable
from pathlib import Path

from seam.training.worker.stages import StageReport, Stopped

from seam.modelrepo.trainings import (
    TrainingSpec,
    TrainingStatus,
    append_log,
    cancel_requested,
    read_status,
    write_status,
)

WRITE_EVERY_S = 0.5
Progress = Callable[[TrainingStatus], None]


class Tracker:
    """One attempt's view of the status: counts the attempt, the seconds, the ETA."""

    def __init__(self, workdir: Path, spec: TrainingSpec, progress: Progress | None) -> None:
        self.workdir, self.spec, self.progress = workdir, spec, progress
        self.status = read_status(workdir) or TrainingStatus()
        self.t0 = time.time()
        self.base_elapsed = self.status.elapsed_s
        self._last_write = 0.0
        self._rate: tuple[str, int, float] | None = None  # stage, first step seen, when

    def log(self, line: str) -> None:
        append_log(self.workdir, line)

    def log_exception(self, exc: BaseException) -> None:
        for line in traceback.format_exception(exc)[-12:]:
            for part in line.rstrip().splitlines():
                self.log("  " + part)

    @property
    def elapsed(self) -> float:
        return self.base_elapsed + (time.time() - self.t0)

    def start(self, resumed: bool) -> None:
        s = self.status
        s.state, s.error, s.attempts, s.resumed = "running", None, s.attempts + 1, resumed
        s.pid = os.getpid()
        s.started_at = s.started_at or time.time()
        self.log(f"attempt {s.attempts} started" + (" (resuming from the checkpoints of an earlier attempt)"
                                                     if resumed else ""))
        self.write(force=True)

    def write(self, force: bool = False) -> None:
        now = time.time()
        if not force and now - self._last_write < WRITE_EVERY_S:
            return
        self._last_write = now
        self.status.elapsed_s = round(self.elapsed, 1)
        write_status(self.workdir, self.status)
        if self.progress is not None:
            self.progress(self.status.model_copy(deep=True))

    def check(self) -> None:
        """Raise Stopped when a cancel is asked or the budget is spent."""
        if cancel_requested(self.workdir):
            raise Stopped("cancelled", "cancelled on request")
        budget = self.spec.budget_s
        if budget is not None and self.elapsed > budget:
            raise Stopped("budget", f"the time budget of {budget:g} s is spent (at {self.status.stage}, step "
                                    f"{self.status.step}/{self.status.steps}); the checkpoints are kept")

    def report(self, r: StageReport) -> None:
        self.check()
        s = self.status
        changed = r.stage != s.stage
        if changed:
            self.log(f"stage {r.stage}")
            self._rate = None
            s.epoch = s.epochs = s.loss = s.eta_s = None
        new_epoch = r.epoch is not None and r.epoch != s.epoch
        last_step = r.step is not None and r.step == r.steps
        s.stage, s.step, s.steps = r.stage, r.step, r.steps
        if r.epoch is not None:
            s.epoch, s.epochs, s.loss = r.epoch, r.epochs, r.loss
        if r.epoch is not None and (new_epoch or last_step):
            # the log keeps what a poll between two writes (or a short stage) would miss
            self.log(f"{r.stage} epoch {r.epoch}/{r.epochs}: step {r.step}/{r.steps}"
                     + (f", loss {r.loss:.4g}" if r.loss is not None else ""))
        s.eta_s = self._eta(r)
        self.write(force=changed or new_epoch or last_step)

    def _eta(self, r: StageReport) -> float | None:
        """Seconds left in this stage at this attempt's pace."""
        if r.step is None or r.steps is None:
            return None
        now = time.time()
        if self._rate is None or self._rate[0] != r.stage or r.step < self._rate[1]:
            self._rate = (r.stage, r.step, now)
            return None
        stage, first, t = self._rate
        if r.step <= first:
            return None
        return round((r.steps - r.step) * (now - t) / (r.step - first), 1)

    def finish(self, state: str, error: str | None = None) -> None:
        s = self.status
        s.state, s.error, s.eta_s = state, error, None  # type: ignore[assignment]
        s.finished_at = time.time()
        self.log(f"{state}" + (f": {error}" if error else ""))
        self.write(force=True)
