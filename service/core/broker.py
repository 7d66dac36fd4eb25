"""The Celery app over the Redis broker, configured from the settings: the API sends tasks with
it (seam.service.jobs.dispatch, seam.service.realtime.wiring) and the workers run them
(seam.service.worker.celery_app, the `celery -A` target, registers the tasks). It lives on the
core floor so that the senders need not import the worker floor above them."""
from __future__ import annotations

from celery import Celery
from seam.service.core.config import Settings
from seam.service.core.redisconn import COMMAND_TIMEOUT_S, CONNECT_TIMEOUT_S, kombu_transport_options

# The modules that define the tasks, imported by a worker when it starts (names, not imports:
# the API only sends tasks by name).
TASK_MODULES = ("seam.service.worker.tasks", "seam.service.worker.redelivery")


def create_celery(settings: Settings) -> Celery:
    if not settings.broker_url:
        raise ValueError("SEAM_BROKER_URL is not set: Celery mode needs a redis:// broker")
    app = Celery("seam", broker=settings.broker_url,
                 include=list(TASK_MODULES))
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
