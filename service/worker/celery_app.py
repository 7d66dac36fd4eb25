"""The one module that creates the Celery app.

    celery -A seam.service.worker.celery_app worker --pool prefork -c 1 -Q <prefix>.realtime,<prefix>.chunks

(`seam worker` does exactly that.) One process per GPU: the engine is created in
each pool process after the fork (`worker_process_init`), never inherited across it.
"""
from __future__ import annotations

from functools import lru_cache

from celery import Celery
from seam.service.core.config import Settings, get_settings
from seam.service.core.redisconn import COMMAND_TIMEOUT_S, CONNECT_TIMEOUT_S, kombu_transport_options


def create_celery(settings: Settings) -> Celery:
    if not settings.broker_url:
        raise ValueError("SEAM_BROKER_URL is not set: Celery mode needs a redis:// broker")
    app = Celery("seam", broker=settings.broker_url,
                 include=["seam.service.worker.tasks", "seam.service.worker.redelivery"])
    vt = settings.visibility_timeout  # above the hard time limit, else a slow chunk runs twice
    # Messages of a worker that died (SIGKILL, OOM, lost host) come back once they are
    # `vt` old; sweep for them every vt/10 s (kombu's default sweep is ~100 s).
    # priority: BRPOP lists the realtime queue first, so a free worker takes synchronous
    # requests before batch chunks (kombu's default round-robin would alternate).
    transport = {**kombu_transport_options(), "visibility_timeout": vt,
                 "unacked_restore_interval": max(1, min(60, vt // 10)), "unacked_restore_throttle": 1,
                 "queue_order_strategy": "priority"}
    app.conf.update(
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],  # never pickle
        task_acks_late=True,  # a chunk is acknowledged after it ran...
        task_reject_on_worker_lost=True,  # ...and re-queued if the worker died under it (deliveries counted)
        worker_prefetch_multiplier=1,
        broker_transport_options=transport,
        result_backend=settings.broker_url,
        result_backend_transport_options={"visibility_timeout": vt},
        redis_socket_timeout=COMMAND_TIMEOUT_S,  # the result backend's own client (Celery's default: 120 s)
        redis_socket_connect_timeout=CONNECT_TIMEOUT_S,
        task_ignore_result=True,  # state lives in the job store, masks on disk
        result_expires=settings.job_ttl_s,
        task_time_limit=settings.task_time_limit_s,
        task_soft_time_limit=settings.task_soft_time_limit_s,
        task_default_queue=settings.queue_name,
        task_routes={"seam.process_chunk": {"queue": settings.queue_name},
                     "seam.realtime": {"queue": settings.realtime_queue_name}},
        worker_proc_alive_timeout=300,  # the pool process loads and warms the engine before it reports up
        broker_connection_retry_on_startup=True,
        worker_send_task_events=False,
        worker_hijack_root_logger=False,
        worker_cancel_long_running_tasks_on_connection_loss=True,
    )
    return app


@lru_cache(maxsize=1)
def _process_app() -> Celery:
    settings = get_settings()
    return create_celery(settings) if settings.broker_url else Celery("seam")


def __getattr__(name: str) -> Celery:
    """`app` / `celery_app`, created from the settings on first use, not at import: importing
    this module reads no environment (`celery -A seam.service.worker.celery_app` finds `app`)."""
    if name in ("app", "celery_app"):
        return _process_app()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
