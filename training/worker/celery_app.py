"""`seam trainer`: the Celery worker that runs trainings (task `seam.train`, queue
`<prefix>-training`), one at a time (concurrency 1: a training takes the whole GPU).

    celery -A seam.training.worker.celery_app worker -Q seam-training -c 1    (what `seam trainer` runs)

The task's argument is the training id; its directory is `$SEAM_DATA_DIR/trainings/<id>/`
(the data directory the API shares). acks_late + reject_on_worker_lost: a trainer killed
under a training (its pool process, or the whole worker once the broker's visibility
timeout passes) gets the task back, and `run_training` continues from the last epoch
checkpoint. Settings are read from the environment, as the service's: SEAM_BROKER_URL,
SEAM_KEY_PREFIX, SEAM_DATA_DIR, SEAM_MODELS_DIR, SEAM_TRAINING_VISIBILITY_S (default 6 h:
above the longest training, else a running one would be handed to a second trainer, which
then finds it locked and leaves it).
"""
from __future__ import annotations

import logging
import os
from functools import lru_cache
from pathlib import Path

from celery import Celery

from seam.modelrepo.trainings import TRAINING_TASK, read_spec, training_queue, trainings_dir

log = logging.getLogger("seam.trainer")
ID_CHARS = set("0123456789abcdef")


def data_dir() -> Path:
    """$SEAM_DATA_DIR, else the service's default ($XDG_CACHE_HOME/seam, usually ~/.cache/seam)."""
    env = os.environ.get("SEAM_DATA_DIR")
    if env:
        return Path(env)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "seam"


def create_trainer_app(broker_url: str, prefix: str, visibility_s: int) -> Celery:
    app = Celery("seam-trainer", broker=broker_url)
    queue = training_queue(prefix)
    app.conf.update(
        task_serializer="json", accept_content=["json"],  # never pickle
        task_acks_late=True, task_reject_on_worker_lost=True, worker_prefetch_multiplier=1,
        task_ignore_result=True,  # the state is status.json
        task_default_queue=queue, task_routes={TRAINING_TASK: {"queue": queue}},
        broker_transport_options={"visibility_timeout": visibility_s,
                                  "unacked_restore_interval": max(1, min(60, visibility_s // 10))},
        broker_connection_retry_on_startup=True, worker_send_task_events=False, worker_hijack_root_logger=False,
    )
    app.task(name=TRAINING_TASK, bind=False)(train_task)
    return app


def train_task(training_id: str) -> str:
    """Run (or continue) the training `training_id`; returns its final state."""
    from seam.training.worker.run import AlreadyRunning, run_training

    if not training_id or set(training_id) - ID_CHARS or len(training_id) > 64:
        log.error("refusing training id %r", training_id)
        return "refused"
    workdir = trainings_dir(data_dir()) / training_id
    try:
        spec = read_spec(workdir)
    except ValueError as exc:
        log.error("training %s: %s", training_id, exc)
        return "unreadable"
    try:
        return run_training(spec, workdir).state
    except AlreadyRunning:
        log.warning("training %s is being run by another trainer; leaving it", training_id)
        return "running elsewhere"


@lru_cache(maxsize=1)
def _process_app() -> Celery:
    broker = os.environ.get("SEAM_BROKER_URL", "")
    if not broker:
        return Celery("seam-trainer")
    return create_trainer_app(broker, os.environ.get("SEAM_KEY_PREFIX", "seam"),
                              int(os.environ.get("SEAM_TRAINING_VISIBILITY_S", str(6 * 3600))))


def __getattr__(name: str) -> Celery:
    """`app` / `celery_app`, made from the environment on first use (`celery -A` finds `app`)."""
    if name in ("app", "celery_app"):
        return _process_app()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
