"""The Celery app of a worker process (made by `seam.service.core.broker.create_celery`).

    celery -A seam.service.worker.celery_app worker --pool prefork -c 1 -Q <prefix>.realtime,<prefix>.chunks

(`seam worker` does exactly that.) One process per GPU: the engine is created in
each pool process after the fork (`worker_process_init`), never inherited across it.
"""
from __future__ import annotations

from functools import lru_cache

from celery import Celery
from seam.service.core.broker import create_celery
from seam.service.core.config import get_settings


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
