"""Getting chunks to whoever processes them: an in-process thread pool (embedded
mode) or Celery workers over Redis. Both run `process_chunk`."""
from __future__ import annotations

import logging
import queue
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable

from service.core.config import Settings
from service.jobs.processing import TRANSIENT, ChunkContext, describe, fail_unfinished, process_chunk

log = logging.getLogger("seam.service")

TASK_NAME = "seam.process_chunk"


class Dispatcher(ABC):
    mode: str

    @abstractmethod
    def submit(self, job_id: str, chunks: list[list[str]]) -> None: ...

    @abstractmethod
    def queued_chunks(self) -> int: ...

    def problem(self) -> str | None:
        """None when able to take work, else why not (readiness)."""
        return None

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass


class EmbeddedDispatcher(Dispatcher):
    """Worker threads in the API process. The queue holds (job, chunk, image ids);
    its size is bounded by the API's cap on active jobs."""

    mode = "embedded"

    def __init__(self, context: Callable[[], ChunkContext], workers: int = 1, max_retries: int = 3,
                 backoff_s: float = 1.0) -> None:
        self.context = context
        self.workers = workers
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        self._q: queue.Queue[tuple[str, int, list[str]] | None] = queue.Queue()
        self._threads: list[threading.Thread] = []
        self._stop = threading.Event()

    def start(self) -> None:
        for i in range(self.workers):
            t = threading.Thread(target=self._loop, name=f"seam-executor-{i}", daemon=True)
            t.start()
            self._threads.append(t)

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        for _ in self._threads:
            self._q.put(None)
        for t in self._threads:
            t.join(timeout)
        self._threads.clear()

    def submit(self, job_id: str, chunks: list[list[str]]) -> None:
        for i, images in enumerate(chunks):
            self._q.put((job_id, i, images))

    def queued_chunks(self) -> int:
        return self._q.qsize()

    def problem(self) -> str | None:
        if not any(t.is_alive() for t in self._threads):
            return "executor threads are not running"
        return None

    def _loop(self) -> None:
        while not self._stop.is_set():
            item = self._q.get()
            if item is None:
                return
            self.run_chunk(*item)

    def run_chunk(self, job_id: str, chunk: int, images: list[str]) -> None:
        """process_chunk with retries and exponential backoff on transient errors."""
        attempt = 0
        while True:
            ctx = None
            try:
                ctx = self.context()
                process_chunk(ctx, job_id, chunk, images)
                return
            except TRANSIENT as exc:
                attempt += 1
                if attempt > self.max_retries or self._stop.is_set():
                    self._give_up(ctx, job_id, images, f"gave up after {attempt} attempts: {describe(exc)}")
                    return
                delay = min(self.backoff_s * 2 ** (attempt - 1), 60.0)
                log.warning("job %s chunk %d: %s; retrying in %.1f s", job_id, chunk, describe(exc), delay)
                self._stop.wait(delay)
            except Exception as exc:  # noqa: BLE001 - a bug must not kill the executor thread
                log.exception("job %s chunk %d failed", job_id, chunk)
                self._give_up(ctx, job_id, images, f"internal error: {describe(exc)}")
                return

    def _give_up(self, ctx: ChunkContext | None, job_id: str, images: list[str], reason: str) -> None:
        try:
            ctx = ctx or self.context()
            kinds = ctx.storage.read_manifest(job_id)["options"]["outputs"]
            fail_unfinished(ctx, job_id, images, kinds, reason)
            ctx.store.finish_if_complete(job_id)
        except Exception:  # noqa: BLE001
            log.exception("could not record the failure of job %s", job_id)


class CeleryDispatcher(Dispatcher):
    """Sends one Celery task per chunk; arguments are ids only, never image bytes."""

    mode = "celery"

    def __init__(self, settings: Settings) -> None:
        import redis

        from service.worker.celery_app import create_celery

        self.settings = settings
        self.celery = create_celery(settings)
        self.redis = redis.Redis.from_url(settings.broker_url, socket_timeout=5, socket_connect_timeout=3)

    def submit(self, job_id: str, chunks: list[list[str]]) -> None:
        with self.celery.producer_or_acquire() as producer:
            for i, images in enumerate(chunks):
                self.celery.send_task(TASK_NAME, args=[job_id, i, images], queue=self.settings.queue_name,
                                      producer=producer)

    def queued_chunks(self) -> int:
        return int(self.redis.llen(self.settings.queue_name))

    def problem(self) -> str | None:
        try:
            self.redis.ping()
        except Exception as exc:  # noqa: BLE001
            return f"broker unreachable: {exc}"
        return None

    def stop(self) -> None:
        try:
            self.redis.close()
            self.celery.close()
        except Exception:  # noqa: BLE001
            pass
