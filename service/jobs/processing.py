"""The chunk-processing code: the one function both the Celery task and the embedded
executor run.

Idempotent by construction: an image whose requested output files all exist is
recorded done without recomputing; outputs are written atomically; completion is
recorded in a set. A chunk started more than `max_deliveries` times (the worker died
on it, e.g. an image that OOM-kills the process) is given up: its unfinished images
are recorded failed and the job moves on.
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from seam.common.image import ImageDecodeError, load_rgb
from service.engine.base import InferenceEngine
from service.jobs.store import ACTIVE_STATES, JobStore
from service.predict import job_outputs
from service.storage import Storage

log = logging.getLogger("seam.service")


class TransientError(Exception):
    """Worth retrying later (storage or broker trouble, engine not loaded yet)."""


def transient_exceptions() -> tuple[type[BaseException], ...]:
    kinds: list[type[BaseException]] = [TransientError, ConnectionError, TimeoutError]
    try:
        import redis.exceptions as rexc

        kinds += [rexc.ConnectionError, rexc.TimeoutError, rexc.BusyLoadingError]
    except ImportError:  # pragma: no cover - redis is a serve dependency
        pass
    return tuple(kinds)


TRANSIENT = transient_exceptions()


@dataclass
class ChunkContext:
    store: JobStore
    storage: Storage
    engine: Callable[[], InferenceEngine]
    max_pixels: int
    max_deliveries: int


@dataclass
class ChunkReport:
    done: int = 0
    failed: int = 0
    skipped: int = 0  # already complete on disk (redelivery)
    cancelled: bool = False
    gave_up: bool = False
    final_state: str | None = None


def describe(exc: BaseException) -> str:
    if isinstance(exc, ImageDecodeError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


def fail_unfinished(ctx: ChunkContext, job_id: str, images: list[str], kinds: list[str], reason: str) -> int:
    """Record every image of the chunk that is not complete as failed; returns how many."""
    done = ctx.store.done_images(job_id)
    n = 0
    for img in images:
        if img in done:
            continue
        if kinds and ctx.storage.outputs_complete(job_id, img, kinds):
            ctx.store.record_done(job_id, img)
            continue
        ctx.store.record_failed(job_id, img, reason)
        n += 1
    return n


def process_chunk(ctx: ChunkContext, job_id: str, chunk: int, images: list[str]) -> ChunkReport:
    rep = ChunkReport()
    state = ctx.store.state(job_id)
    if state not in ACTIVE_STATES:  # cancelled, finished or expired: nothing to do
        rep.cancelled = state == "cancelled"
        return rep
    deliveries = ctx.store.incr_delivery(job_id, chunk)
    try:
        manifest = ctx.storage.read_manifest(job_id)
    except FileNotFoundError:
        ctx.store.fail(job_id, "the job's files are missing from the data directory")
        rep.final_state = "failed"
        return rep
    opts = manifest["options"]
    kinds: list[str] = list(opts["outputs"])
    if deliveries > ctx.max_deliveries:
        log.error("job %s chunk %d started %d times; giving up on it", job_id, chunk, deliveries)
        rep.failed = fail_unfinished(
            ctx, job_id, images, kinds,
            f"gave up after chunk {chunk} was started {deliveries - 1} times without finishing "
            "(the worker crashed, was killed or timed out while processing it)")
        rep.gave_up = True
        rep.final_state = ctx.store.finish_if_complete(job_id)
        return rep
    ctx.store.mark_running(job_id)
    engine = ctx.engine()
    names = engine.foreground_classes()
    labels_table: dict[str, list[int]] = manifest.get("labels") or {}
    for img in images:
        if not ctx.store.is_active(job_id):
            rep.cancelled = True
            break
        if ctx.storage.outputs_complete(job_id, img, kinds):
            ctx.store.record_done(job_id, img)
            rep.skipped += 1
            continue
        try:
            path = ctx.storage.input_path(job_id, manifest, img)
            rgb = load_rgb(path, max_pixels=ctx.max_pixels)
            files = job_outputs(engine, rgb, labels_table.get(img), opts.get("method"), opts.get("threshold"),
                                kinds, names, img, manifest["images"][img])
        except TRANSIENT:
            raise
        except Exception as exc:  # noqa: BLE001 - a bad image must not stop the job
            log.info("job %s image %s failed: %s", job_id, img, describe(exc))
            ctx.store.record_failed(job_id, img, describe(exc))
            rep.failed += 1
            continue
        try:
            for kind, data in files.items():
                ctx.storage.write_output(job_id, kind, img, data)
        except OSError as exc:  # disk full, NFS hiccup: retry the chunk later
            raise TransientError(f"writing outputs of {img}: {exc}") from exc
        ctx.store.record_done(job_id, img)
        rep.done += 1
    rep.final_state = ctx.store.finish_if_complete(job_id)
    return rep
