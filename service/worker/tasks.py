"""Celery tasks: thin wrappers over `service.jobs.processing.process_chunk`."""
from __future__ import annotations

import logging
from typing import Any

from celery import Task
from celery.exceptions import SoftTimeLimitExceeded
from celery.signals import worker_process_init

from service.core.config import get_settings
from service.core.engine import EngineHolder, build_engine
from service.jobs.dispatch import TASK_NAME
from service.jobs.processing import TRANSIENT, ChunkContext, TransientError, fail_unfinished, process_chunk
from service.jobs.store import RedisJobStore
from service.storage import Storage
from service.worker.celery_app import celery_app

log = logging.getLogger("seam.worker")

_holder = EngineHolder()
_shared: dict[str, Any] = {}


@worker_process_init.connect
def _init_process(**_: Any) -> None:
    """In each pool process, after the fork: create (and warm) the engine here, so no
    onnxruntime session or CUDA context is ever inherited across a fork."""
    settings = get_settings()
    _holder.load(lambda: build_engine(settings), warm=settings.warmup)


def _store() -> RedisJobStore:
    if "store" not in _shared:
        s = get_settings()
        _shared["store"] = RedisJobStore(s.broker_url or "", s.key_prefix, s.job_ttl_s)
    return _shared["store"]


def _engine():
    if _holder.engine is None:
        if _holder.error is None and not _holder.loading:  # solo/threads pools: no worker_process_init
            s = get_settings()
            _holder.load(lambda: build_engine(s), warm=s.warmup)
        if _holder.engine is None:
            raise TransientError(f"engine not loaded: {_holder.error or 'loading'}")
    return _holder.engine


def context() -> ChunkContext:
    s = get_settings()
    return ChunkContext(store=_store(), storage=Storage(s.data_dir), engine=_engine, max_pixels=s.max_pixels,
                        max_deliveries=s.max_deliveries)


def _fail_chunk(args: tuple | list, reason: str) -> None:
    try:
        job_id, _chunk, images = args
        ctx = context()
        kinds = ctx.storage.read_manifest(job_id)["options"]["outputs"]
        fail_unfinished(ctx, job_id, list(images), kinds, reason)
        ctx.store.finish_if_complete(job_id)
    except Exception:  # noqa: BLE001
        log.exception("could not record a failed chunk %r", args)


class ChunkTask(Task):
    autoretry_for = TRANSIENT
    retry_backoff = True
    retry_backoff_max = 60
    retry_jitter = True
    max_retries = get_settings().max_retries
    acks_late = True
    reject_on_worker_lost = True
    ignore_result = True

    def on_failure(self, exc, task_id, args, kwargs, einfo) -> None:
        # Retries exhausted, a bug, or (called by the main process) the hard time limit
        # killed the pool process: record the chunk's unfinished images so the job ends.
        _fail_chunk(args, f"chunk failed: {type(exc).__name__}: {exc}")


@celery_app.task(bind=True, base=ChunkTask, name=TASK_NAME)
def process_chunk_task(self: ChunkTask, job_id: str, chunk: int, images: list[str]) -> dict:
    """Label the images `images` (ids from the job manifest) of job `job_id`."""
    try:
        rep = process_chunk(context(), job_id, chunk, list(images))
    except SoftTimeLimitExceeded as exc:
        # Images already written are kept and skipped on the retry.
        raise self.retry(exc=exc, countdown=1) from exc
    return {"done": rep.done, "failed": rep.failed, "skipped": rep.skipped, "cancelled": rep.cancelled}
