"""Running trainings on trainers, by the protocol of `seam.modelrepo.trainings` (spec.json in,
status.json and log.txt out, the cancel file), never by importing training code:

* `CeleryTrainers` (broker mode): `send_task("seam.train", [id])` on `<prefix>-training`;
  `seam trainer` runs it (acks_late: a killed trainer's task comes back and resumes). The broker
  gives back the task of a whole trainer that died only after SEAM_TRAINING_VISIBILITY_S (hours:
  above the longest training), so a watcher sends a running training again as soon as its
  trainer's heartbeat is older than SEAM_TRAINING_STALE_S; the trainer that takes it continues
  from the last epoch checkpoint (a second copy of the message finds the training locked or
  finished and does nothing).
* `EmbeddedTrainers` (no broker): a child process `python -m seam.training.worker DIR` per
  training, at most `embedded_trainers` at once, the rest waiting in order. A child that dies
  before its training is finished (killed, OOM) is relaunched up to `training_restarts` times
  and continues from its last epoch checkpoint; an API that restarts relaunches every
  unfinished training. The child dies with the API (PR_SET_PDEATHSIG), so a restarted API
  never races an orphan for the training's lock.
"""
from __future__ import annotations

import contextlib
import ctypes
import importlib.util
import logging
import os
import signal
import subprocess
import sys
import threading
from collections import deque
from pathlib import Path
from typing import Any

from seam.service.core.config import Settings
from seam.service.core.errors import ApiError
from seam.service.trainings.store import TrainingStore

from seam.modelrepo.trainings import (
    REQUEUED_FILE,
    TRAINING_TASK,
    TrainingStatus,
    append_log,
    read_status,
    trainer_gone,
    training_queue,
    write_status,
    write_time,
)

log = logging.getLogger("seam.service.trainings")
TRAINER_MODULE = "seam.training.worker"  # a name run by the child, never imported here
CHILD_OUTPUT = "trainer.out"
POLL_S = 0.5


class CeleryTrainers:
    def __init__(self, settings: Settings, store: TrainingStore, celery: Any = None) -> None:
        """`celery`: the API's Celery app (the dispatcher's); None: one of its own."""
        if celery is None:
            from seam.service.core.broker import create_celery

            celery = create_celery(settings)
        self.settings, self.store, self.celery = settings, store, celery
        self.queue = training_queue(settings.key_prefix)
        self._stop = threading.Event()
        self._watcher: threading.Thread | None = None

    def start(self) -> None:
        self._watcher = threading.Thread(target=self._watch, name="trainer-heartbeats", daemon=True)
        self._watcher.start()

    def stop(self) -> None:
        self._stop.set()
        if self._watcher is not None:
            self._watcher.join(timeout=10)

    def _watch(self) -> None:
        every = min(10.0, self.settings.training_stale_s / 3)
        while not self._stop.wait(every):
            try:
                self.resend_orphans()
            except Exception:  # noqa: BLE001 - a broker or disk hiccup: the next round retries
                log.warning("checking the trainers' heartbeats failed", exc_info=True)

    def resend_orphans(self, now: float | None = None) -> list[str]:
        """Send again every running training whose trainer stopped beating; their ids."""
        sent = []
        for rec in self.store.unfinished():
            if rec.status.state != "running" or not trainer_gone(rec.dir, self.settings.training_stale_s, now):
                continue
            write_time(rec.dir, REQUEUED_FILE, now)
            append_log(rec.dir, f"the trainer's heartbeat stopped (over {self.settings.training_stale_s:g} s): "
                                "sent to the trainers again")
            self.submit(rec.id)
            sent.append(rec.id)
            log.warning("training %s: trainer heartbeat lost, sent again", rec.id)
        return sent

    def check_available(self) -> None:
        pass  # the task waits in the queue until a trainer takes it

    def submit(self, tid: str) -> None:
        self.celery.send_task(TRAINING_TASK, args=[tid], queue=self.queue)

    def cancelled_before_start(self, tid: str) -> bool:
        return False  # the trainer sees the cancel file when it takes the task

    def resume_unfinished(self) -> None:
        pass  # unacknowledged tasks come back to the trainers by themselves


def _die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    with contextlib.suppress(OSError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


class EmbeddedTrainers:
    def __init__(self, settings: Settings, store: TrainingStore) -> None:
        self.settings, self.store = settings, store
        self.running: dict[str, subprocess.Popen] = {}
        self.restarts: dict[str, int] = {}
        self.waiting: deque[str] = deque()
        self.lock = threading.Lock()
        self._stop = threading.Event()
        self._wake = threading.Event()  # a submission is waiting
        self._thread: threading.Thread | None = None

    # ----------------------------------------------------------------- lifecycle

    def start(self) -> None:
        self._thread = threading.Thread(target=self._watch, name="seam-trainers", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the children (their trainings stay unfinished: the next start resumes them)."""
        self._stop.set()
        self._wake.set()
        with self.lock:
            procs = list(self.running.values())
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
        if self._thread is not None:
            self._thread.join(5)

    def check_available(self) -> None:
        if importlib.util.find_spec("torch") is None:  # find_spec of a top-level name imports nothing
            raise ApiError(503, "no_trainer", "this server has no trainer: embedded mode runs trainings in a child "
                                              "process that needs torch (pip install 'seam-wsss[train]'); or run "
                                              "`seam trainer` workers with a broker (SEAM_BROKER_URL)")

    def resume_unfinished(self) -> None:
        for rec in self.store.unfinished():
            if rec.cancel_requested and rec.status.state == "queued":
                self._mark_cancelled(rec.dir, rec.status)
                continue
            append_log(rec.dir, "the API restarted: relaunching the training")
            self.submit(rec.id)

    # ----------------------------------------------------------------- work

    def submit(self, tid: str) -> None:
        with self.lock:
            if tid in self.running or tid in self.waiting:
                return
            self.waiting.append(tid)
        self._wake.set()  # the watcher thread starts it (`_spawn` says why never this thread)

    def cancelled_before_start(self, tid: str) -> bool:
        """Cancel a training that has not started yet; False when it is running (the child polls the file)."""
        with self.lock:
            if tid not in self.waiting:
                return False
            self.waiting.remove(tid)
        d = self.store.root / tid
        self._mark_cancelled(d, read_status(d) or TrainingStatus())
        return True

    def _mark_cancelled(self, d: Path, status: TrainingStatus) -> None:
        status.state, status.error = "cancelled", "cancelled before it started"
        write_status(d, status)
        append_log(d, "cancelled before it started")

    def _fill(self) -> None:
        with self.lock:
            while self.waiting and len(self.running) < self.settings.embedded_trainers:
                tid = self.waiting.popleft()
                self.running[tid] = self._spawn(tid)

    def _spawn(self, tid: str) -> subprocess.Popen:
        """Called by the watcher thread only: PR_SET_PDEATHSIG kills the child when the *thread*
        that forked it ends, and the threads requests run on (anyio's pool) end after 10 s idle;
        a child started from one was killed 10 s later, mid-training."""
        d = self.store.root / tid
        env = {**os.environ, "SEAM_MODELS_DIR": str(self.settings.models_dir), "PYTHONUNBUFFERED": "1"}
        with open(d / CHILD_OUTPUT, "ab") as out:
            return subprocess.Popen([sys.executable, "-m", TRAINER_MODULE, str(d)], stdout=out,
                                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                                    preexec_fn=_die_with_parent if sys.platform == "linux" else None)

    def _watch(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(POLL_S)
            self._wake.clear()
            if self._stop.is_set():
                return
            with self.lock:
                ended = [(t, p.returncode) for t, p in self.running.items() if p.poll() is not None]
                for t, _ in ended:
                    del self.running[t]
            for tid, rc in ended:
                self._ended(tid, rc)
            self._fill()

    def _ended(self, tid: str, rc: int) -> None:
        """A child exited: a training left unfinished is relaunched (it resumes), up to the limit."""
        d = self.store.root / tid
        status = read_status(d) or TrainingStatus()
        if status.terminal or self._stop.is_set():
            return
        n = self.restarts[tid] = self.restarts.get(tid, 0) + 1
        why = f"signal {-rc}" if rc < 0 else f"exit code {rc}"
        if n > self.settings.training_restarts:
            status.state, status.error = "failed", (f"the trainer process ended ({why}) {n} times before finishing; "
                                                    f"see GET /trainings/{tid}/log")
            write_status(d, status)
            append_log(d, status.error)
            return
        append_log(d, f"the trainer process ended ({why}) before finishing: relaunch {n} of "
                      f"{self.settings.training_restarts}")
        self.submit(tid)
