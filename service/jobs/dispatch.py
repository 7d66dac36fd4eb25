"""Getting chunks to whoever processes them: an in-process thread pool (embedded
mode) or Celery workers over Redis. Both run `seam.service.jobs.execution.attempt_chunk`
(process_chunk + the retry policy + recording a given-up chunk)."""
from __future__ import annotations

import logging
import queue
import threading
from abc import ABC, abstractmethod

from seam.service.core.config import Settings
from seam.service.jobs.execution import attempt_chunk
from seam.service.jobs.processing import ChunkContext

log = logging.getLogger("seam.service")

TASK_NAME = "seam.process_chunk"


class Dispatcher(ABC):
    mode: str

    @abstractmethod
    def submit(self, job_id: str, chunks: list[list[str]], first: int = 0) -> None:
        """Queue chunks numbered first, first + 1, ... (a job read as a stream queues them one by one)."""

    @abstractmethod
    def queued_chunks(self) -> int: ...

    def problem(self) -> str | None:
        """None when able to take work, else why not (readiness)."""
        return None

    def start(self) -> None:  # noqa: B027 - optional hook: most dispatchers have nothing to start
        pass

    def stop(self) -> None:  # noqa: B027 - optional hook, as start
        pass


class EmbeddedDispatcher(Dispatcher):
    """Worker threads in the API process. The queue holds (job, chunk, image ids);
    its size is bounded by the API's cap on active jobs."""

    mode = "embedded"

    def __init__(self, context: ChunkContext, workers: int = 1) -> None:
        self.context = context
        self.workers = workers
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

    def submit(self, job_id: str, chunks: list[list[str]], first: int = 0) -> None:
        for i, images in enumerate(chunks, first):
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
        """The chunk with the shared retry policy (the wait is cut short by stop())."""
        retries = 0
        while (delay := attempt_chunk(self.context, job_id, chunk, images, retries)) is not None:
            if self._stop.wait(delay):
                return  # shutting down: the chunk stays unfinished (embedded state dies with the process)
            retries += 1


class CeleryDispatcher(Dispatcher):
    """Sends one Celery task per chunk; arguments are ids only, never image bytes."""

    mode = "celery"

    def __init__(self, settings: Settings) -> None:
        from seam.service.core.broker import create_celery
        from seam.service.core.redisconn import sync_redis

        self.settings = settings
        self.celery = create_celery(settings)
        self.redis = sync_redis(settings.broker_url or "")

    def submit(self, job_id: str, chunks: list[list[str]], first: int = 0) -> None:
        with self.celery.producer_or_acquire() as producer:
            for i, images in enumerate(chunks, first):
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
