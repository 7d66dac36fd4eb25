"""Submitting a batch job: one call from `POST /jobs` that checks the quota, reserves a slot
among SEAM_MAX_ACTIVE_JOBS, reads the body (an archive upload or a directory request),
prepares the job's files and manifest, creates it in the store and hands its chunks to the
dispatcher.

The quota check and the reservation come before the body is read, so concurrent
submissions cannot overshoot either. Whatever fails after the reservation undoes it and
removes the job's files."""
from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import ValidationError
from seam.service.core.config import Settings
from seam.service.core.engine_holder import resolve_method
from seam.service.core.errors import ApiError, describe_validation, settings_roots
from seam.service.core.redact import redact
from seam.service.core.registry import ModelRegistry, ServedModel
from seam.service.engine.base import InferenceEngine
from seam.service.inputs import read_capped
from seam.service.jobs import create as jc
from seam.service.jobs import lifecycle, submit_stream
from seam.service.jobs.dispatch import Dispatcher
from seam.service.jobs.stores.base import JobSnapshot, JobStore
from seam.service.jobs.submit_stream import StreamPlan
from seam.service.schemas import DirectoryJobRequest, JobOptions, UrlJobRequest
from seam.service.storage import Storage
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData, UploadFile
from starlette.requests import Request

FORM_CONTENT_TYPES = ("multipart/form-data", "application/x-www-form-urlencoded")
_OPTION_FIELDS = ("model", "method", "threshold", "max_side", "outputs", "image_url_prefix")
_FORM_FIELDS = {"archive", "labels", "manifest", "output_url", *_OPTION_FIELDS}


@dataclass(frozen=True)
class JobServices:
    """What a submission touches: the app's settings, job store, files, dispatcher and engine."""

    settings: Settings
    store: JobStore
    storage: Storage
    dispatcher: Dispatcher
    engine: InferenceEngine
    registry: ModelRegistry | None = None  # resolves the job's `model` (None: `engine`, unpinned)


@dataclass(frozen=True)
class _Prepared:
    options: JobOptions
    images: dict[str, str]
    table: dict[str, list[int]]
    source: str
    source_dir: Path | None
    skipped: dict[str, str] = field(default_factory=dict)  # archive members not extracted -> why
    served: ServedModel | None = None  # the model version the job pins
    stream: StreamPlan | None = None  # a job over a data set (input_url, uploaded manifest): read after the answer


async def submit(request: Request, svc: JobServices, owner: str | None) -> JobSnapshot:
    """Create and queue the job the request describes; its snapshot as created."""
    is_form = _is_form(request)
    declared = request.headers.get("content-length", "")
    await run_in_threadpool(lifecycle.check_quota, svc.storage, svc.settings,
                            int(declared) if declared.isdigit() else 0)
    job_id = uuid.uuid4().hex
    taken = await run_in_threadpool(svc.store.reserve, job_id, svc.settings.max_active_jobs)
    if taken is not None:
        raise ApiError(503, "queue_full", f"{taken} jobs are queued or running "
                                          f"(limit {svc.settings.max_active_jobs}); retry later", {"Retry-After": "30"})
    try:
        prepared = await (_from_form(request, svc, job_id) if is_form else _from_json(request, svc))
        snap, chunks = await run_in_threadpool(_record, svc, job_id, prepared, owner)
    except BaseException:
        await run_in_threadpool(jc.discard, svc.storage, job_id)
        await run_in_threadpool(svc.store.release, job_id)
        raise
    finally:
        svc.storage.forget_usage()
    try:
        await run_in_threadpool(svc.dispatcher.submit, job_id, chunks)
        if prepared.stream is not None:
            names = (prepared.served.engine if prepared.served is not None else svc.engine).foreground_classes()
            submit_stream.start(svc.settings, svc.store, svc.storage, svc.dispatcher, job_id, prepared.stream,
                                list(names))
    except Exception as exc:  # broker down
        await run_in_threadpool(svc.store.fail, job_id,
                                redact(f"could not queue the job: {exc}", settings_roots(svc.settings)))
        raise ApiError(503, "unavailable", f"could not queue the job: {exc}", {"Retry-After": "10"}) from None
    return snap


def _is_form(request: Request) -> bool:
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype in FORM_CONTENT_TYPES:
        return True
    if ctype == "application/json":
        return False
    raise ApiError(415, "unsupported_media_type",
                   "send multipart/form-data with an 'archive' file, or application/json with a 'directory'")


def _record(svc: JobServices, job_id: str, p: _Prepared, owner: str | None) -> tuple[JobSnapshot, list[list[str]]]:
    """Write the manifest and create the job in the store (after which it is no longer a reservation)."""
    engine = p.served.engine if p.served is not None else svc.engine
    names = engine.foreground_classes()
    opts = p.options.model_dump(mode="json")
    pin = None
    if p.served is not None:
        opts["model"] = p.served.ref
        pin = {"model": p.served.name, "model_version": p.served.version, "model_digest": p.served.digest}
    stream = p.stream.manifest_fields(svc.settings.max_archive_members) if p.stream is not None else None
    jc.write_manifest(svc.storage, job_id, opts, p.images, p.table, p.source, p.source_dir,
                      svc.settings.chunk_size, classes=names, models=model_refs(engine), skipped=p.skipped, pin=pin,
                      extra=stream)
    if p.stream is not None:  # size unknown yet: one more than read so far (jobs.streamed), chunks queued as read
        return svc.store.create(job_id, 1, 0, opts, p.source, owner), []
    ids = sorted(p.images)
    chunks = jc.chunked(ids, svc.settings.chunk_size)
    return svc.store.create(job_id, len(ids), len(chunks), opts, p.source, owner), chunks


async def _from_form(request: Request, svc: JobServices, job_id: str) -> _Prepared:
    form = await request.form(max_files=2, max_fields=8, max_part_size=1024 * 1024)
    try:
        options = form_options(form)
        served = await run_in_threadpool(_served, svc, options)
        engine = served.engine if served is not None else svc.engine
        check_method(options, engine)
        archive = form.get("archive")
        if form.get("manifest") is not None and archive is not None:
            raise ApiError(422, "validation_error", "send either an 'archive' or a 'manifest', not both")
        if isinstance(form.get("manifest"), UploadFile):
            plan = await run_in_threadpool(submit_stream.plan_from_upload, svc.settings, svc.storage, job_id,
                                           form["manifest"].file, form["manifest"].filename or "",
                                           _text(form.get("output_url")))
            return _Prepared(options, {}, {}, "manifest", None, served=served, stream=plan)
        if not isinstance(archive, UploadFile):
            raise ApiError(422, "validation_error", "field 'archive' is required (a zip or tar of images)")
        labels_data = await _labels_upload(form.get("labels"), svc.settings.max_labels_bytes)
        images, table, skipped = await run_in_threadpool(jc.prepare_upload_job, svc.storage, svc.settings, job_id,
                                                         archive.file, labels_data, engine.foreground_classes())
    finally:
        await form.close()
    return _Prepared(options, images, table, "upload", None, skipped, served)


async def _labels_upload(labels: UploadFile | str | None, cap: int) -> bytes | None:
    if isinstance(labels, UploadFile):
        data: bytes | None = await labels.read(cap + 1)
    else:
        data = labels.encode() if isinstance(labels, str) and labels.strip() else None
    if data is not None and len(data) > cap:
        raise ApiError(413, "labels_too_large", f"the labels upload is larger than {cap} bytes "
                                                "(SEAM_MAX_LABELS_BYTES)")
    return data


async def _from_json(request: Request, svc: JobServices) -> _Prepared:
    raw = await read_capped(request.stream(), svc.settings.max_labels_bytes,
                            "JSON job bodies (SEAM_MAX_LABELS_BYTES)")
    if b'"input_url"' in raw:  # a data set where it lives (docs/storage.md)
        return await _from_url(raw, svc)
    body = await run_in_threadpool(parse_directory_request, raw)  # a big body must not stall the loop
    options = JobOptions.model_validate(body.model_dump(include=set(_OPTION_FIELDS)))
    served = await run_in_threadpool(_served, svc, options)
    engine = served.engine if served is not None else svc.engine
    check_method(options, engine)
    source_dir, images, table = await run_in_threadpool(
        jc.prepare_directory_job, svc.settings, body.directory, body.recursive, body.labels,
        engine.foreground_classes())
    return _Prepared(options, images, table, "directory", source_dir, served=served)


async def _from_url(raw: bytes, svc: JobServices) -> _Prepared:
    try:
        body = UrlJobRequest.model_validate_json(raw)
    except ValidationError as exc:
        raise ApiError(422, "validation_error", describe_validation(exc.errors())) from None
    options = JobOptions.model_validate(body.model_dump(include=set(_OPTION_FIELDS)))
    served = await run_in_threadpool(_served, svc, options)
    check_method(options, served.engine if served is not None else svc.engine)
    plan = await run_in_threadpool(submit_stream.plan_from_url, svc.settings, body.input_url, body.output_url)
    return _Prepared(options, {}, {}, "url", None, served=served, stream=plan)


def _text(value: object) -> str | None:
    return value if isinstance(value, str) and value.strip() else None


def _served(svc: JobServices, options: JobOptions) -> ServedModel | None:
    """The version the job pins: the one `options.model` names, else the default's promoted one
    (404/422 for an unknown or refused one)."""
    return svc.registry.acquire(options.model) if svc.registry is not None else None


def parse_directory_request(raw: bytes) -> DirectoryJobRequest:
    try:
        return DirectoryJobRequest.model_validate_json(raw)
    except ValidationError as exc:
        raise ApiError(422, "validation_error", describe_validation(exc.errors())) from None
    except RecursionError:
        raise ApiError(422, "validation_error", "JSON nested too deeply") from None


def form_options(form: FormData) -> JobOptions:
    raw: dict = {}
    for key in _OPTION_FIELDS:
        v = form.get(key)
        if isinstance(v, UploadFile):
            raise ApiError(422, "validation_error", f"field '{key}' must be a plain form field, not a file")
        if v is not None and v != "":
            raw[key] = v
    if "outputs" in raw:
        raw["outputs"] = [t.strip() for t in raw["outputs"].split(",") if t.strip()]
    unknown = sorted(set(form.keys()) - _FORM_FIELDS)
    if unknown:
        raise ApiError(422, "validation_error", f"unknown form field(s): {', '.join(unknown)}")
    try:
        return JobOptions.model_validate(raw)
    except ValidationError as exc:
        raise ApiError(422, "validation_error", describe_validation(exc.errors())) from None


def model_refs(engine: InferenceEngine) -> list[dict]:
    """Name, kind and ONNX sha256 of each loaded model: recorded with a job at submission."""
    return [{"name": m.name, "kind": m.kind, "sha256": (m.manifest.get("onnx") or {}).get("sha256")}
            for m in engine.models()]


def check_method(options: JobOptions, engine: InferenceEngine) -> None:
    """A job may leave the method to the workers' models; one it names must be runnable now."""
    if options.method is not None:
        resolve_method(engine, options.method, where="jobs")
