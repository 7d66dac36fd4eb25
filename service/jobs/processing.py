"""The chunk-processing code: the one function both the Celery task and the embedded
executor run.

Idempotent by construction: an image whose requested output files all exist is
recorded done without recomputing; outputs are written atomically; completion is
recorded in a set. A chunk started more than `max_deliveries` times (the worker died
on it, e.g. an image that OOM-kills the process) is given up: its unfinished images
are recorded failed and the job moves on.

Same-size images of a chunk (size read from the header, EXIF orientation applied) run
as engine batches of at most `max_batch` (`seam.service.batching`: an image the batch fails
on is retried alone, so it fails alone); cancellation is checked between batches.
"""
from __future__ import annotations

import io
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from seam.service.batching import batches, segment_batch
from seam.service.core.redact import redact
from seam.service.core.registry import PinMismatch
from seam.service.engine import methods
from seam.service.engine.base import InferenceEngine
from seam.service.jobs import stream_chunks
from seam.service.jobs.results import coco_image_ids, image_files
from seam.service.jobs.stores.base import ACTIVE_STATES, JobStore
from seam.service.storage import Storage

from seam.common.image import ImageDecodeError, load_rgb

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
    """What processing a chunk needs; built once per process by `seam.service.jobs.execution.build_context`."""

    store: JobStore
    storage: Storage
    engine: Callable[..., Any]  # () -> the default engine; (NAME:VERSION, digest) -> a job's pinned ServedModel
    max_pixels: int
    max_deliveries: int
    max_batch: int = 1  # same-size images of a chunk run as one engine batch of at most this many
    retry: Any = None  # seam.service.jobs.execution.RetryPolicy (typed loosely: runtime imports this module)
    between: Callable[[], None] | None = None  # called between batches (workers serve sync requests there)
    roots: Sequence[tuple[str, str]] = ()  # folders redacted in recorded errors (core.errors.settings_roots)
    datasets: Any = None  # seam.service.datasets.fetching.DatasetReader: jobs over data-set URLs (jobs.stream_chunks)

    def public(self, reason: str) -> str:
        """An error as recorded for the job's owner: no server paths, addresses or hosts (as HTTP errors)."""
        return redact(reason, self.roots)


@dataclass
class ChunkReport:
    done: int = 0
    failed: int = 0
    skipped: int = 0  # already complete on disk (redelivery)
    cancelled: bool = False
    gave_up: bool = False
    final_state: str | None = None
    records: dict[str, dict] = field(default_factory=dict)  # results-manifest lines (jobs with output_url)


def describe(exc: BaseException) -> str:
    if isinstance(exc, ImageDecodeError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


def fail_unfinished(ctx: ChunkContext, job_id: str, images: list[str], kinds: list[str], reason: str) -> int:
    """Record every image of the chunk that is not complete as failed; returns how many."""
    done = ctx.store.done_among(job_id, images)
    reason = ctx.public(reason)
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
        if manifest.get("streamed"):  # a job read from a prefix or manifest: this chunk's entries
            manifest = stream_chunks.chunk_manifest(ctx.storage, job_id, chunk, manifest)
    except FileNotFoundError:
        ctx.store.fail(job_id, "the job's files are missing from the data directory")
        rep.final_state = "failed"
        return rep
    opts = manifest["options"]
    kinds: list[str] = list(opts["outputs"])
    if deliveries > ctx.max_deliveries:
        _give_up(ctx, rep, job_id, chunk, images, manifest, deliveries)
        return rep
    ctx.store.mark_running(job_id)
    try:
        engine = job_engine(ctx, manifest)
    except PinMismatch as exc:  # the version the job pinned is gone or changed: never another one
        rep.failed = fail_unfinished(ctx, job_id, images, kinds, str(exc))
        rep.final_state = ctx.store.finish_if_complete(job_id)
        return rep
    names = job_classes(manifest, engine)
    if isinstance(names, str):  # the job was submitted for another label set
        rep.failed = fail_unfinished(ctx, job_id, images, kinds, names)
        rep.final_state = ctx.store.finish_if_complete(job_id)
        return rep
    job = _Job(job_id, manifest, kinds, names, engine, stream_chunks.outputs_of(ctx.storage, ctx.datasets, manifest))
    paths = _pending_inputs(ctx, rep, job, images, first=deliveries == 1)
    for batch in batches(paths, lambda img: decoded_size(paths[img]) or img, ctx.max_batch):
        if not ctx.store.is_active(job_id):
            rep.cancelled = True
            break
        _process_batch(ctx, rep, job, [(img, paths[img]) for img in batch])
        if ctx.between is not None:
            ctx.between()
    _end_chunk(ctx, rep, job, chunk, images)
    return rep


def _give_up(ctx: ChunkContext, rep: ChunkReport, job_id: str, chunk: int, images: list[str], manifest: dict,
             deliveries: int) -> None:
    """A poison chunk: its unfinished images are recorded failed (and listed so in the results
    manifest of a job with output_url) and the job moves on."""
    log.error("job %s chunk %d started %d times; giving up on it", job_id, chunk, deliveries)
    kinds: list[str] = list(manifest["options"]["outputs"])
    rep.failed = fail_unfinished(
        ctx, job_id, images, kinds,
        f"gave up after chunk {chunk} was started {deliveries - 1} times without finishing "
        "(the worker crashed, was killed or timed out while processing it)")
    rep.gave_up = True
    done = ctx.store.done_among(job_id, images) if manifest.get("output_url") else set()
    for img in images:
        if img not in done:
            rep.records[img] = stream_chunks.record(img, manifest, None, kinds, error=ctx.public(
                f"gave up: chunk {chunk} was started {deliveries - 1} times without finishing"))
    sink = stream_chunks.outputs_of(ctx.storage, ctx.datasets, manifest)
    _end_chunk(ctx, rep, _Job(job_id, manifest, kinds, [], None, sink), chunk, images)  # type: ignore[arg-type]


def _end_chunk(ctx: ChunkContext, rep: ChunkReport, job: _Job, chunk: int, images: list[str]) -> None:
    """Record whether the job has ended; with an output_url, this chunk's results part first and,
    when the job has ended, the results manifest."""
    prefix = job.sink if isinstance(job.sink, stream_chunks.OutputPrefix) else None
    if prefix is not None and not rep.cancelled:
        missing = [img for img in images if img not in rep.records]  # recorded done by an earlier delivery
        for img in missing:
            rep.records[img] = stream_chunks.record(img, job.manifest, prefix, job.kinds)
        for img in images:
            rep.records[img].setdefault("uri", (job.manifest.get("uris") or {}).get(img))
        stream_chunks.write_part(prefix, chunk, [rep.records[img] for img in images])
    rep.final_state = ctx.store.finish_if_complete(job.id)
    if rep.final_state is not None:  # the job has ended: free its inputs (outputs stay; the sweeper covers other ends)
        ctx.storage.delete_inputs(job.id)
        if prefix is not None:
            stream_chunks.finalize(ctx.storage, ctx.store, prefix, job.id)


@dataclass(frozen=True)
class _Job:
    """What processing one image of a job needs to know about the job."""

    id: str
    manifest: dict
    kinds: list[str]
    names: list[str]
    engine: InferenceEngine
    sink: Any = None  # where outputs go: the job's storage, or its output_url (stream_chunks.OutputPrefix)

    @property
    def labels(self) -> dict[str, list[int]]:
        return self.manifest.get("labels") or {}


def _pending_inputs(ctx: ChunkContext, rep: ChunkReport, job: _Job, images: list[str],
                    first: bool = False) -> dict[str, Path]:
    """Input paths of the images still to do; those with every output already written (an
    earlier delivery) are recorded done, entries that do not resolve are recorded failed.
    On a chunk's first delivery nothing can have written its outputs yet: the check, one
    request per image and kind on an object store (a third of a job's S3 requests), is skipped."""
    paths: dict[str, Path] = {}
    for img in images:
        if not first and job.sink.outputs_complete(job.id, img, job.kinds):
            ctx.store.record_done(job.id, img)
            rep.skipped += 1
            continue
        try:
            paths[img] = (stream_chunks.read_input(ctx.datasets, job.manifest, img) if job.manifest.get("streamed")
                          else ctx.storage.input_path(job.id, job.manifest, img))
        except Exception as exc:  # noqa: BLE001 - a bad entry fails alone
            _image_failed(ctx, rep, job.id, img, exc)
    return paths


def _process_batch(ctx: ChunkContext, rep: ChunkReport, job: _Job, batch: list[tuple[str, Path]]) -> None:
    """Decode, segment (one engine batch) and write the outputs of a batch of images; an image
    that fails is recorded failed alone, a transient error (broker, disk) fails the chunk."""
    loaded: list[tuple[str, object]] = []
    for img, path in batch:
        try:
            src = path.getvalue() if isinstance(path, io.BytesIO) else path  # an image read from a data-set URI
            loaded.append((img, load_rgb(src, max_pixels=ctx.max_pixels)))
        except TRANSIENT:
            raise
        except Exception as exc:  # noqa: BLE001 - a bad image must not stop the job
            _image_failed(ctx, rep, job.id, img, exc)
    opts = job.manifest["options"]
    coco_ids = job.manifest.get("coco_ids") or (coco_image_ids(job.manifest) if "coco" in job.kinds else {})
    method = opts.get("method") or methods.best(job.engine.methods(), "jobs")  # the table says where each runs
    segs = segment_batch(job.engine, [rgb for _, rgb in loaded], [job.labels.get(img) for img, _ in loaded],
                         method=method, threshold=opts.get("threshold"), max_side=opts.get("max_side"))
    for (img, rgb), seg in zip(loaded, segs, strict=True):
        try:
            if isinstance(seg, Exception):
                raise seg
            files = image_files(job.engine, rgb, seg, job.labels.get(img), job.kinds, job.names, img,
                                job.manifest["images"][img], coco_ids.get(img, 0))
        except TRANSIENT:
            raise
        except Exception as exc:  # noqa: BLE001
            _image_failed(ctx, rep, job.id, img, exc)
            continue
        try:
            for kind, data in files.items():
                job.sink.write_output(job.id, kind, img, data)
        except OSError as exc:  # disk full, NFS hiccup: retry the chunk later
            raise TransientError(f"writing outputs of {img}: {exc}") from exc
        ctx.store.record_done(job.id, img)
        rep.done += 1
        if isinstance(job.sink, stream_chunks.OutputPrefix):
            rep.records[img] = stream_chunks.record(img, job.manifest, job.sink, job.kinds, *_found(seg, job.names))


def _image_failed(ctx: ChunkContext, rep: ChunkReport, job_id: str, img: str, exc: BaseException) -> None:
    log.info("job %s image %s failed: %s", job_id, img, describe(exc))
    ctx.store.record_failed(job_id, img, ctx.public(describe(exc)))
    rep.failed += 1
    rep.records[img] = {"id": img, "outputs": {}, "classes": None, "scores": None, "error": ctx.public(describe(exc))}


def _found(seg: Any, names: list[str]) -> tuple[list[str], dict[str, float]]:
    """The classes a segmentation shows and every class's score, by name (the results manifest)."""
    scores = [float(x) for x in np.ravel(seg.scores)] if seg.scores is not None else []
    found = [names[c] for c in seg.classes if 0 <= c < len(names)]
    return found, {n: round(v, 4) for n, v in zip(names, scores, strict=False)}  # scores may cover the background


def job_engine(ctx: ChunkContext, manifest: dict) -> InferenceEngine:
    """The engine of the model version the job pinned at submission (name, version, digest in its
    manifest); jobs written before versions existed use the default engine."""
    if not manifest.get("model"):
        return ctx.engine()
    got = ctx.engine(f"{manifest['model']}:{manifest['model_version']}", manifest.get("model_digest") or "")
    return got.engine if hasattr(got, "engine") else got


def job_classes(manifest: dict, engine: InferenceEngine) -> list[str] | str:
    """The foreground class names the job was submitted with (stored in its manifest), or,
    when the engine of this process serves another label set, why the job cannot run here."""
    names = engine.foreground_classes()
    stored = manifest.get("classes")
    if stored is None:  # a job written before class names were recorded
        return names
    if list(stored) != list(names):
        model = ", ".join(f"{m.get('name')}" for m in manifest.get("models") or []) or "unknown model"
        return (f"the job was submitted for the classes of {model} ({', '.join(stored)}); "
                f"this worker's model has other classes ({', '.join(names)})")
    return list(stored)


def decoded_size(path: Path) -> tuple[int, int] | None:
    """(H, W) after EXIF orientation, from the header only; None when unreadable (the
    image is then decoded alone and its error recorded)."""
    try:
        with Image.open(path) as im:
            w, h = im.size
            orientation = im.getexif().get(0x0112, 1)
    except Exception:  # noqa: BLE001
        return None
    return (w, h) if orientation in (5, 6, 7, 8) else (h, w)
