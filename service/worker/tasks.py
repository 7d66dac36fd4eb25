"""Celery tasks: thin wrappers over the shared job runtime (`seam.service.jobs.execution`) and
the synchronous-request server (`seam.service.realtime.server`).

Per pool process (after the fork, never inherited across it): one engine, one chunk
context, one realtime server and one heartbeat. `celeryd_after_setup` (main process)
records the node name and the queues this worker consumes; the pool processes
inherit them.
"""
from __future__ import annotations

import logging
import os
import time
from typing import Any

from celery import Task, shared_task
from celery.exceptions import SoftTimeLimitExceeded
from celery.signals import (
    celeryd_after_setup,
    worker_process_init,
    worker_process_shutdown,
    worker_ready,
    worker_shutdown,
)
from seam.service.core.config import get_settings
from seam.service.core.engine_holder import build_engine
from seam.service.core.redisconn import sync_redis
from seam.service.core.registry import ModelRegistry, make_registry
from seam.service.jobs.dispatch import TASK_NAME
from seam.service.jobs.execution import attempt_chunk, build_context, engine_getter, give_up
from seam.service.jobs.processing import ChunkContext
from seam.service.model_sync import start_model_sync
from seam.service.realtime.messages import REALTIME_TASK
from seam.service.realtime.server import RealtimeServer
from seam.service.worker.heartbeat import WorkerHeartbeat

log = logging.getLogger("seam.worker")

_holder = ModelRegistry()  # replaced, per pool process, by the repository's (_start_process)
_shared: dict[str, Any] = {}
_NODE_ENV, _QUEUES_ENV = "SEAM_WORKER_NODE", "SEAM_WORKER_QUEUES"


@celeryd_after_setup.connect
def _record_node(sender: str, instance: Any, **_: Any) -> None:
    _remember(str(sender), instance.app)


def _remember(node: str, app: Any) -> None:
    os.environ[_NODE_ENV] = node
    try:
        queues = list(app.amqp.queues.consume_from)
    except Exception:  # noqa: BLE001
        queues = []
    os.environ[_QUEUES_ENV] = ",".join(queues)


@worker_process_init.connect
def _init_process(sender: Any = None, **_: Any) -> None:
    """In each pool process, after the fork: announce it, then create (and warm) the engine
    here, so no onnxruntime session or CUDA context is ever inherited across a fork."""
    if isinstance(sender, str) and "@" in sender:  # the solo pool sends its node name, before celeryd_after_setup
        os.environ[_NODE_ENV] = sender
    if "heartbeat" not in _shared:
        _start_process()


@worker_ready.connect
def _init_solo(sender: Any = None, **_: Any) -> None:
    # solo/threads pools run tasks in the main process: no worker_process_init there.
    pool = getattr(getattr(sender, "pool", None), "__module__", "") or type(getattr(sender, "pool", None)).__module__
    if "prefork" not in pool and "heartbeat" not in _shared:
        if getattr(sender, "hostname", None):  # (the solo pool can get here before celeryd_after_setup)
            _remember(str(sender.hostname), sender.app)
        _start_process()


@worker_process_shutdown.connect
@worker_shutdown.connect
def _stop_process(**_: Any) -> None:
    hb = _shared.pop("heartbeat", None)
    if hb is not None:
        hb.stop()
    _holder.stop_watching()
    sync = _shared.pop("model_sync", None)
    if sync is not None:
        sync.stop()


def _start_process() -> None:
    settings = get_settings()
    _shared["started_at"] = time.time()
    _shared["heartbeat"] = WorkerHeartbeat(shared_redis(), settings.key_prefix, _node(), settings.worker_heartbeat_s,
                                           _heartbeat_payload).start()
    global _holder
    # SEAM_MODELS_URL: the repository copied into SEAM_MODELS_DIR before the models load
    _shared["model_sync"] = start_model_sync(settings)
    _holder = make_registry(settings)
    if settings.engine == "fake":
        _holder.load(lambda: build_engine(settings), warm=settings.warmup)
    else:  # the promoted versions now, then new ones as they are published or promoted (hot reload)
        _holder.refresh()
        _holder.start_watching(settings.models_poll_s)
    _shared["heartbeat"].beat()  # ready at once, not one period later


def _node() -> str:
    return os.environ.get(_NODE_ENV) or f"seam@{os.uname().nodename}"


def _queues() -> list[str]:
    s = get_settings()
    env = os.environ.get(_QUEUES_ENV)
    return [q for q in env.split(",") if q] if env else [s.queue_name, s.realtime_queue_name]


def _heartbeat_payload() -> dict:
    engine = _holder.engine
    out: dict[str, Any] = {"queues": _queues(), "ready": engine is not None, "error": _holder.error,
                           "started_at": _shared.get("started_at", 0.0), "model": _holder.default_ref()}
    if engine is not None:
        out["classes"] = engine.foreground_classes()
        out["methods"] = engine.methods()
        out["models"] = [{"name": m.name, "kind": m.kind, "backbone": m.backbone, "classes": m.classes,
                          "provider": m.provider, "sha256": (m.manifest.get("onnx") or {}).get("sha256"),
                          "description": m.description, "cls_threshold": m.cls_threshold,
                          "bg_threshold": m.bg_threshold}
                         for m in engine.models()]
    return out


def shared_redis() -> Any:
    if "redis" not in _shared:
        s = get_settings()
        # The realtime server's BLPOP waits up to the batching window.
        _shared["redis"] = sync_redis(s.broker_url or "", longest_block_s=s.batch_window_ms / 1000.0)
    return _shared["redis"]


def _engine(model: str | None = None, digest: str | None = None) -> Any:
    """The default engine (model None), or the ServedModel of `model` (NAME:VERSION; with
    `digest`, exactly that version as a job pinned it)."""
    s = get_settings()
    return engine_getter(_holder, build=lambda: build_engine(s), warm=s.warmup, wait_s=60)(model, digest)


def _served(model: str | None = None) -> Any:
    """The ServedModel of `model` (None or "": the default model's), so every answer names its version."""
    return _engine(model or "")


def realtime() -> RealtimeServer:
    if "realtime" not in _shared:
        s = get_settings()
        _shared["realtime"] = RealtimeServer(shared_redis(), s.key_prefix, _served, _node(), s.max_pixels, s.max_batch,
                                             s.batch_window_ms / 1000.0)
    return _shared["realtime"]


def _between_batches() -> None:
    """Synchronous requests go first: serve those already waiting between two batches of a chunk."""
    if get_settings().realtime_queue_name in _queues():
        try:
            realtime().serve(window_s=0.0)
        except Exception:  # noqa: BLE001 - never fail a chunk because of a synchronous request
            log.exception("serving synchronous requests between batches failed")


def context() -> ChunkContext:
    if "context" not in _shared:  # the job store is the broker's Redis (seam.service.jobs.execution.make_store)
        _shared["context"] = build_context(get_settings(), _engine, between=_between_batches)
    return _shared["context"]


class ChunkTask(Task):
    acks_late = True
    reject_on_worker_lost = True
    ignore_result = True
    max_retries = None  # the shared RetryPolicy decides (seam.service.jobs.execution.attempt_chunk)

    def on_failure(self, exc, task_id, args, kwargs, einfo) -> None:
        # A bug outside attempt_chunk, or (called by the main process) the hard time limit
        # killed the pool process: record the chunk's unfinished images so the job ends.
        try:
            job_id, chunk, images = args
        except ValueError:
            log.error("chunk task %s failed with unexpected arguments %r", task_id, args)
            return
        give_up(context(), job_id, list(images), f"chunk failed: {type(exc).__name__}: {exc}", chunk)


# shared_task: bound to the app that includes this module when it is finalised, so importing
# the tasks creates no app (and reads no settings).
@shared_task(bind=True, base=ChunkTask, name=TASK_NAME)
def process_chunk_task(self: ChunkTask, job_id: str, chunk: int, images: list[str]) -> None:
    """Label the images `images` (ids from the job manifest) of job `job_id`."""
    try:
        delay = attempt_chunk(context(), job_id, chunk, list(images), self.request.retries,
                              reraise=(SoftTimeLimitExceeded,))
    except SoftTimeLimitExceeded as exc:
        # Images already written are kept and skipped on the retry (each start is counted:
        # the poison-chunk guard still applies).
        raise self.retry(exc=exc, countdown=1) from exc
    if delay is not None:
        raise self.retry(countdown=delay)


@shared_task(name=REALTIME_TASK, ignore_result=True, acks_late=False)
def serve_realtime_task(request_id: str | None = None) -> int:
    """Wake-up for synchronous requests: serve every pending one (batched), not only `request_id`."""
    return realtime().serve()
