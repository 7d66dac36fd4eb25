"""The job plumbing every path that runs engine work shares: the embedded executor
threads, the Celery chunk task and the synchronous-request path of the workers.

One place builds the job store and the chunk context, waits for (or loads) the
engine, records the unfinished images of a chunk that is given up, and applies the
retry policy; `seam.service.jobs.dispatch` (embedded), `seam.service.worker.tasks` (Celery) and
`seam.service.realtime.server` only call into it.
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from seam.service.core.config import Settings
from seam.service.core.engine_holder import EngineHolder
from seam.service.core.errors import ApiError, settings_roots
from seam.service.core.registry import ModelRegistry
from seam.service.datasets.fetching import DatasetReader
from seam.service.datasets.policy import DatasetPolicy
from seam.service.engine.base import InferenceEngine
from seam.service.jobs import stream_chunks
from seam.service.jobs.processing import (
    TRANSIENT,
    ChunkContext,
    TransientError,
    describe,
    fail_unfinished,
    process_chunk,
)
from seam.service.jobs.stores.base import JobStore
from seam.service.jobs.stores.redis import RedisJobStore
from seam.service.jobs.stores.sqlite import SqliteJobStore
from seam.service.object_storage import make_storage
from seam.service.storage import Storage

log = logging.getLogger("seam.service")


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff after a transient error (broker, disk, engine still loading)."""

    max_retries: int = 3
    backoff_s: float = 1.0
    backoff_max_s: float = 60.0

    def delay(self, retry: int) -> float:
        """Seconds to wait before retry number `retry` (1 = the first retry)."""
        return min(self.backoff_s * 2 ** max(retry - 1, 0), self.backoff_max_s)


def make_store(settings: Settings) -> JobStore:
    if settings.mode == "celery":
        return RedisJobStore(settings.broker_url or "", settings.key_prefix, settings.job_ttl_s)
    return SqliteJobStore(Path(settings.data_dir) / "jobs.sqlite3", settings.job_ttl_s)  # survives restarts


def engine_getter(holder: EngineHolder, build: Callable[[], InferenceEngine] | None = None, warm: bool = True,
                  wait_s: float = 600.0) -> Callable[..., Any]:
    """get() -> the default engine of this process; loads it (when `build` is given and nothing
    loads it yet) or waits for a background load, else raises TransientError so the work is retried.
    get("NAME:VERSION") -> that version's ServedModel (a registry); get(ref, digest) -> exactly the
    version a job pinned: PinMismatch when it is gone or its files changed."""

    def default() -> InferenceEngine:
        if holder.engine is None:
            if build is not None and holder.error is None and not holder.loading and not _dynamic(holder):
                holder.load(build, warm=warm)
            else:
                holder.wait(wait_s)
        if holder.engine is None:
            raise TransientError(f"engine not loaded: {holder.error or 'still loading'}")
        return holder.engine

    def get(model: str | None = None, digest: str | None = None) -> Any:
        if model is None or not isinstance(holder, ModelRegistry):
            return default()
        if not holder.dynamic:
            default()  # a static engine (fake, tests): wait for it like before
        else:
            holder.wait(wait_s)  # the first scan of the repository
        try:
            if digest is not None:
                name, _, version = model.rpartition(":")
                return holder.acquire_pinned(name, int(version), digest)
            return holder.acquire(model)
        except ApiError as exc:
            if exc.status_code == 503:  # still loading: retried like any transient error
                raise TransientError(exc.message) from None
            raise

    return get


def _dynamic(holder: EngineHolder) -> bool:
    return isinstance(holder, ModelRegistry) and holder.dynamic


def build_context(settings: Settings, engine: Callable[[], InferenceEngine], store: JobStore | None = None,
                  storage: Storage | None = None, between: Callable[[], None] | None = None) -> ChunkContext:
    return ChunkContext(
        store=store or make_store(settings), storage=storage or make_storage(settings), engine=engine,
        max_pixels=settings.max_pixels, max_deliveries=settings.max_deliveries, max_batch=settings.max_batch,
        retry=RetryPolicy(settings.max_retries), between=between, roots=settings_roots(settings),
        datasets=dataset_reader(settings))


def dataset_reader(settings: Settings) -> DatasetReader:
    """Reads data-set URIs under this process's rules (SEAM_DATASET_*), whatever a chunk file says."""
    return DatasetReader(DatasetPolicy.from_settings(settings), settings.s3_endpoint_url,
                         max_bytes=settings.max_upload_bytes)  # an image from a URI: as large as a /segment upload


def give_up(ctx: ChunkContext, job_id: str, images: list[str], reason: str, chunk: int | None = None) -> None:
    """Record every unfinished image of the chunk as failed so the job still ends (a job with an
    output_url also lists them in its results manifest, and gets it when this ends the job)."""
    try:
        manifest = ctx.storage.read_manifest(job_id)
        kinds = manifest["options"]["outputs"]
        fail_unfinished(ctx, job_id, list(images), kinds, reason)
        final = ctx.store.finish_if_complete(job_id)
        if manifest.get("output_url"):
            stream_chunks.gave_up(ctx.storage, ctx.store, ctx.datasets, manifest, job_id, chunk, list(images),
                                  ctx.public(reason), final)
    except Exception:  # noqa: BLE001 - nothing more can be done; the job expires with its TTL
        log.exception("could not record the failure of job %s", job_id)


def attempt_chunk(ctx: ChunkContext, job_id: str, chunk: int, images: list[str], retries: int,
                  reraise: tuple[type[BaseException], ...] = ()) -> float | None:
    """Run the chunk once. `retries`: how many retries came before this attempt; `reraise`:
    exceptions left to the caller (Celery's soft time limit).

    Returns None when the chunk is finished (processed, or given up and recorded), or the
    delay in seconds after which the caller must run it again (transient error).
    """
    try:
        process_chunk(ctx, job_id, chunk, images)
        return None
    except reraise:
        raise
    except TRANSIENT as exc:
        if retries >= ctx.retry.max_retries:
            give_up(ctx, job_id, images, f"gave up after {retries + 1} attempts: {describe(exc)}", chunk)
            return None
        delay = ctx.retry.delay(retries + 1)
        log.warning("job %s chunk %d: %s; retrying in %.1f s", job_id, chunk, describe(exc), delay)
        return delay
    except Exception as exc:  # noqa: BLE001 - a bug must not leave the job running forever
        log.exception("job %s chunk %d failed", job_id, chunk)
        give_up(ctx, job_id, images, f"internal error: {describe(exc)}", chunk)
        return None
