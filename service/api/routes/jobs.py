"""Batch jobs: an archive upload or a server-side directory, processed in chunks by
the embedded executor or Celery workers.

A job belongs to the API key that created it: other keys get 404 for it (as for an
unknown id) unless they are admin keys. A submission first checks the data-directory
quota and reserves a slot among SEAM_MAX_ACTIVE_JOBS atomically, before reading its
body, so concurrent submissions cannot overshoot either."""
from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi import Path as PathParam
from fastapi.responses import FileResponse, JSONResponse, StreamingResponse
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from seam.common.palette import voc_palette
from service.api.deps import DispatcherDep, EngineDep, HolderDep, PrincipalDep, SettingsDep, StorageDep, StoreDep
from service.core.errors import ApiError, describe_validation
from service.core.security import Principal
from service.encoding import coco_categories
from service.integrations import exports
from service.jobs import create as jc
from service.jobs import lifecycle
from service.jobs.store import JobSnapshot
from service.predict import model_refs
from service.schemas import (
    DirectoryJobRequest,
    ErrorResponse,
    JobImageError,
    JobLinks,
    JobList,
    JobOptions,
    JobPublic,
    OutputKind,
)

router = APIRouter(tags=["jobs"])

JobId = Annotated[str, PathParam(pattern=r"^[0-9a-f]{32}$", description="Job id (32 hex digits).")]
_E = {code: {"model": ErrorResponse} for code in (401, 404, 408, 409, 413, 415, 422, 429, 503, 507)}


def _ts(v: float | None) -> datetime | None:
    return None if v is None else datetime.fromtimestamp(v, tz=UTC)


def to_public(s: JobSnapshot) -> JobPublic:
    return JobPublic(
        id=s.id, state=s.state, total=s.total, done=s.done, failed=s.failed,
        progress=round((s.done + s.failed) / s.total, 4) if s.total else 1.0,
        method=s.options.get("method"), threshold=s.options.get("threshold"), outputs=s.options.get("outputs", []),
        source=s.source, created_at=_ts(s.created_at), started_at=_ts(s.started_at), finished_at=_ts(s.finished_at),
        expires_at=_ts(s.expires_at), error=s.error, errors=[JobImageError(image=i, error=e) for i, e in s.errors],
        links=JobLinks(self=f"/jobs/{s.id}", results=f"/jobs/{s.id}/results"))


def _snapshot_or_404(store, job_id: str, principal: Principal, errors_limit: int | None = None) -> JobSnapshot:
    snap = store.snapshot(job_id) if errors_limit is None else store.snapshot(job_id, errors_limit=errors_limit)
    if snap is None or not principal.may_see(snap.owner):  # someone else's job looks like no job
        raise ApiError(404, "not_found", f"no job {job_id} (unknown or expired)")
    return snap


async def _read_capped(request: Request, cap: int) -> bytes:
    """The body, refused with 413 as soon as it passes `cap` bytes."""
    chunks, n = [], 0
    async for chunk in request.stream():
        n += len(chunk)
        if n > cap:
            raise ApiError(413, "too_large", f"JSON job bodies are limited to {cap} bytes (SEAM_MAX_LABELS_BYTES)")
        chunks.append(chunk)
    return b"".join(chunks)


def _parse_directory_request(raw: bytes) -> DirectoryJobRequest:
    try:
        return DirectoryJobRequest.model_validate_json(raw)
    except ValidationError as exc:
        raise ApiError(422, "validation_error", describe_validation(exc.errors())) from None
    except RecursionError:
        raise ApiError(422, "validation_error", "JSON nested too deeply") from None


_JOB_BODY = {
    "required": True,
    "content": {
        "multipart/form-data": {"schema": {
            "type": "object", "required": ["archive"],
            "properties": {
                "archive": {"type": "string", "format": "binary",
                            "description": "zip or tar(.gz/.bz2/.xz) of images; may hold labels.csv or labels.json."},
                "labels": {"type": "string", "format": "binary",
                           "description": "Optional label table: CSV `image,labels` or JSON {image: [classes]}."},
                "method": {"type": "string", "enum": ["cam", "pcm", "rw", "deeplab"]},
                "threshold": {"type": "number", "minimum": 0, "maximum": 1},
                "max_side": {"type": "integer", "minimum": 8, "maximum": 16384,
                             "description": "Long side images are resized to before inference (outputs keep "
                                            "each image's size)."},
                "outputs": {"type": "string", "description": "Comma-separated subset of png,npy,coco,overlay,"
                                                              "labelstudio,cvat.", "example": "png,coco"},
                "image_url_prefix": {"type": "string", "maxLength": 2048, "pattern": "^(https?://|/)",
                                     "description": "labelstudio output: image URL = prefix + path in the job."},
            }}},
        "application/json": {"schema": {"$ref": "#/components/schemas/DirectoryJobRequest"}},
    },
}


def _form_options(form) -> JobOptions:
    raw: dict = {}
    for key in ("method", "threshold", "max_side", "outputs", "image_url_prefix"):
        v = form.get(key)
        if isinstance(v, UploadFile):
            raise ApiError(422, "validation_error", f"field '{key}' must be a plain form field, not a file")
        if v is not None and v != "":
            raw[key] = v
    if "outputs" in raw:
        raw["outputs"] = [t.strip() for t in raw["outputs"].split(",") if t.strip()]
    unknown = sorted(set(form.keys()) - {"archive", "labels", "method", "threshold", "max_side", "outputs",
                                         "image_url_prefix"})
    if unknown:
        raise ApiError(422, "validation_error", f"unknown form field(s): {', '.join(unknown)}")
    try:
        return JobOptions.model_validate(raw)
    except ValidationError as exc:
        raise ApiError(422, "validation_error", describe_validation(exc.errors())) from None


def _check_method(options: JobOptions, engine) -> None:
    available = engine.methods()
    if options.method is not None and options.method not in available:
        raise ApiError(422, "method_unavailable", f"method {options.method!r} is not available with the loaded "
                                                  f"models; available: {', '.join(available)}")


@router.post("/jobs", status_code=202, response_model=JobPublic, summary="Submit a batch job.",
             description="multipart/form-data with an `archive` (zip/tar of images), or JSON `{\"directory\": ...}` "
                         "naming a folder under SEAM_ALLOWED_ROOT. Answers 202 with the job; poll `GET /jobs/{id}`.",
             openapi_extra={"requestBody": _JOB_BODY}, responses={403: {"model": ErrorResponse}, **_E})
async def create_job(request: Request, settings: SettingsDep, store: StoreDep, storage: StorageDep,
                     dispatcher: DispatcherDep, engine: EngineDep, principal: PrincipalDep) -> JSONResponse:
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    is_form = ctype in ("multipart/form-data", "application/x-www-form-urlencoded")
    if not is_form and ctype != "application/json":
        raise ApiError(415, "unsupported_media_type",
                       "send multipart/form-data with an 'archive' file, or application/json with a 'directory'")
    declared = request.headers.get("content-length", "")
    await run_in_threadpool(lifecycle.check_quota, storage, settings, int(declared) if declared.isdigit() else 0)
    names = engine.foreground_classes()
    job_id = uuid.uuid4().hex
    taken = await run_in_threadpool(store.reserve, job_id, settings.max_active_jobs)
    if taken is not None:
        raise ApiError(503, "queue_full", f"{taken} jobs are queued or running (limit {settings.max_active_jobs}); "
                                          "retry later", {"Retry-After": "30"})
    source_dir = None
    created = False
    try:
        if is_form:
            form = await request.form(max_files=2, max_fields=8, max_part_size=1024 * 1024)
            try:
                options = _form_options(form)
                _check_method(options, engine)
                archive = form.get("archive")
                if not isinstance(archive, UploadFile):
                    raise ApiError(422, "validation_error", "field 'archive' is required (a zip or tar of images)")
                labels = form.get("labels")
                cap = settings.max_labels_bytes
                labels_data = (await labels.read(cap + 1)) if isinstance(labels, UploadFile) else (
                    labels.encode() if isinstance(labels, str) and labels.strip() else None)
                if labels_data is not None and len(labels_data) > cap:
                    raise ApiError(413, "labels_too_large", f"the labels upload is larger than {cap} bytes "
                                                            "(SEAM_MAX_LABELS_BYTES)")
                images, table = await run_in_threadpool(
                    jc.prepare_upload_job, storage, settings, job_id, archive.file, labels_data, names)
            finally:
                await form.close()
            source = "upload"
        else:
            raw = await _read_capped(request, settings.max_labels_bytes)
            body = await run_in_threadpool(_parse_directory_request, raw)  # a big body must not stall the loop
            options = JobOptions.model_validate(body.model_dump(include={"method", "threshold", "max_side", "outputs",
                                                                         "image_url_prefix"}))
            _check_method(options, engine)
            source_dir, images, table = await run_in_threadpool(
                jc.prepare_directory_job, settings, body.directory, body.recursive, body.labels, names)
            source = "directory"
        opts = options.model_dump(mode="json")
        await run_in_threadpool(jc.write_manifest, storage, job_id, opts, images, table, source, source_dir,
                                settings.chunk_size, classes=names, models=model_refs(engine))
        ids = sorted(images)
        chunks = jc.chunked(ids, settings.chunk_size)
        snap = await run_in_threadpool(store.create, job_id, len(ids), len(chunks), opts, source, principal.owner)
        created = True
    except BaseException:
        await run_in_threadpool(jc.discard, storage, job_id)
        if not created:
            await run_in_threadpool(store.release, job_id)
        raise
    finally:
        storage.forget_usage()
    try:
        await run_in_threadpool(dispatcher.submit, job_id, chunks)
    except Exception as exc:  # broker down
        await run_in_threadpool(store.fail, job_id, f"could not queue the job: {exc}")
        raise ApiError(503, "unavailable", f"could not queue the job: {exc}", {"Retry-After": "10"}) from None
    return JSONResponse(to_public(snap).model_dump(mode="json"), status_code=202,
                        headers={"Location": f"/jobs/{job_id}"})


@router.get("/jobs", response_model=JobList, summary="List jobs, newest first.",
            description="Only the jobs of the caller's API key (every job for admin keys).", responses={401: _E[401]})
def list_jobs(store: StoreDep, principal: PrincipalDep, offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
              limit: Annotated[int, Query(ge=1, le=100)] = 20) -> JobList:
    total, snaps = store.list(offset, limit, owner=principal.list_filter)
    return JobList(jobs=[to_public(s) for s in snaps], total=total, offset=offset, limit=limit)


@router.get("/jobs/{job_id}", response_model=JobPublic, summary="Job status.", responses=_E)
def get_job(job_id: JobId, store: StoreDep, principal: PrincipalDep) -> JobPublic:
    return to_public(_snapshot_or_404(store, job_id, principal))


@router.delete("/jobs/{job_id}", response_model=JobPublic, summary="Cancel a job.",
               description="Queued and running jobs stop after the image in progress; finished jobs are unchanged. "
                           "The job's inputs are deleted once it has stopped; its outputs are kept until the TTL.",
               responses=_E)
def cancel_job(job_id: JobId, store: StoreDep, storage: StorageDep, principal: PrincipalDep) -> JobPublic:
    _snapshot_or_404(store, job_id, principal)
    if store.cancel(job_id) and storage.job_dir(job_id).is_dir():
        # Nothing new starts on a cancelled job; an image in progress that loses its
        # input is recorded failed, which is moot for a cancelled job.
        storage.delete_inputs(job_id)
    return to_public(_snapshot_or_404(store, job_id, principal))


def _merged_coco(storage, job_id: str, manifest: dict, names: list[str]) -> bytes:
    images, annotations = [], []
    for n, (iid, _rel) in enumerate(sorted(manifest["images"].items()), start=1):
        path = storage.output_path(job_id, "coco", iid)
        try:
            doc = json.loads(path.read_bytes())
        except (OSError, ValueError):
            continue
        images.append({**doc["image"], "id": n})
        for a in doc["annotations"]:
            annotations.append({**a, "id": len(annotations) + 1, "image_id": n})
    return json.dumps({"info": {"description": f"seam job {job_id}"}, "images": images,
                       "annotations": annotations, "categories": coco_categories(names)}).encode()


def _labelmap(names: list[str]) -> bytes:
    pal = voc_palette()
    lines = ["# label:color_rgb:parts:actions"]
    for i, n in enumerate(["background", *names]):
        r, g, b = (int(v) for v in pal[i])
        lines.append(f"{n}:{r},{g},{b}::")
    return ("\n".join(lines) + "\n").encode()


@router.get("/jobs/{job_id}/results", summary="All outputs as a zip (streamed).", response_class=StreamingResponse,
            responses={200: {"content": {"application/zip": {"schema": {"type": "string", "format": "binary"}}},
                             "description": "zip: <kind>/<image id>.<ext>, coco.json, labelmap.txt, errors.json, "
                                            "labelstudio_tasks.json, cvat_segmentation_mask.zip"},
                       **_E})
def job_results(job_id: JobId, store: StoreDep, storage: StorageDep, holder: HolderDep,
                principal: PrincipalDep) -> StreamingResponse:
    snap = _snapshot_or_404(store, job_id, principal)
    if snap.active:
        raise ApiError(409, "job_not_finished", f"job is {snap.state} ({snap.done + snap.failed}/{snap.total}); "
                                                "results are available once it has finished", {"Retry-After": "5"})
    try:
        manifest = storage.read_manifest(job_id)
    except FileNotFoundError:
        raise ApiError(404, "not_found", f"the files of job {job_id} are gone") from None
    names = manifest.get("classes")  # recorded at submission: independent of the model loaded now
    if names is None:  # a job from before class names were recorded
        names = holder.get().foreground_classes()
    extra = {"job.json": to_public(snap).model_dump_json(indent=1).encode()}
    full = _snapshot_or_404(store, job_id, principal, errors_limit=1_000_000)
    extra["errors.json"] = json.dumps([{"image": i, "error": e} for i, e in full.errors], indent=1).encode()
    kinds = snap.options.get("outputs", [])
    if "png" in kinds:
        extra["labelmap.txt"] = _labelmap(names)
    if "coco" in kinds:
        extra["coco.json"] = _merged_coco(storage, job_id, manifest, names)
    if "labelstudio" in kinds or "cvat" in kinds:
        extra.update(exports.job_extras(storage, job_id, manifest, names, kinds))
    return StreamingResponse(storage.stream_results_zip(job_id, extra), media_type="application/zip",
                             headers={"Content-Disposition": f'attachment; filename="seam-{job_id}.zip"'})


@router.get("/jobs/{job_id}/results/{kind}/{name:path}", summary="One output file.",
            description="`kind`: png, npy, coco or overlay; `name`: the image id (its path in the archive without "
                        "extension), with or without the output's extension.",
            response_class=FileResponse,
            responses={200: {"content": {"image/png": {}, "application/json": {}, "application/octet-stream": {}},
                             "description": "The file."}, **_E})
def job_result_file(job_id: JobId, kind: OutputKind, name: str, store: StoreDep, storage: StorageDep,
                    principal: PrincipalDep) -> FileResponse:
    _snapshot_or_404(store, job_id, principal)
    path = storage.resolve_output(job_id, kind, name)
    if path is None:
        raise ApiError(404, "not_found", f"no {kind} output named {name[:200]!r} in job {job_id}")
    media = {".png": "image/png", ".json": "application/json"}.get(path.suffix, "application/octet-stream")
    return FileResponse(path, media_type=media, filename=path.name)
