"""Batch jobs: an archive upload or a server-side directory, processed in chunks by
the embedded executor or Celery workers.

A job belongs to the API key that created it: other keys get 404 for it (as for an
unknown id) unless they are admin keys. Submission itself (quota, reservation, reading the
body, creating and queueing) is `seam.service.jobs.submit`."""
from __future__ import annotations

import contextlib
import json
from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi import Path as PathParam
from fastapi.responses import FileResponse, JSONResponse, StreamingResponse
from seam.service.api.deps import DispatcherDep, EngineDep, HolderDep, PrincipalDep, SettingsDep, StorageDep, StoreDep
from seam.service.core.config import Settings
from seam.service.core.errors import ApiError
from seam.service.core.registry import ModelRegistry
from seam.service.jobs import stream_chunks
from seam.service.jobs.access import visible_snapshot
from seam.service.jobs.execution import dataset_reader
from seam.service.jobs.results import result_extras
from seam.service.jobs.stores.base import JobSnapshot
from seam.service.jobs.submit import JobServices, submit
from seam.service.outputs import kinds
from seam.service.schemas import (
    DirectoryJobRequest,
    ErrorResponse,
    JobImageError,
    JobLinks,
    JobList,
    JobPublic,
    JobUploadForm,
    OutputKindName,
    OutputKindPublic,
    UrlJobRequest,
)

router = APIRouter(tags=["jobs"])
public_router = APIRouter(tags=["jobs"])  # no API key: what a job can produce is no secret (the page lists it)
# Models the request body below refers to: FastAPI only adds the models of the parameters it
# parses itself to components.schemas (seam.service.main registers these).
OPENAPI_MODELS = (DirectoryJobRequest, UrlJobRequest, JobUploadForm)
RESULTS_PATH = "/jobs/{job_id}/results"
RESULT_FILE_PATH = "/jobs/{job_id}/results/{kind}/{name}"

JobId = Annotated[str, PathParam(pattern=r"^[0-9a-f]{32}$", description="Job id (32 hex digits).")]
_E = {code: {"model": ErrorResponse} for code in (401, 404, 408, 409, 413, 415, 422, 429, 503, 507)}


def _ts(v: float | None) -> datetime | None:
    return None if v is None else datetime.fromtimestamp(v, tz=UTC)


def to_public(s: JobSnapshot) -> JobPublic:
    return JobPublic(
        id=s.id, state=s.state, total=s.total, done=s.done, failed=s.failed,
        progress=round((s.done + s.failed) / s.total, 4) if s.total else 1.0,
        model=s.options.get("model"), method=s.options.get("method"), threshold=s.options.get("threshold"),
        outputs=s.options.get("outputs", []),
        source=s.source, created_at=_ts(s.created_at), started_at=_ts(s.started_at), finished_at=_ts(s.finished_at),
        expires_at=_ts(s.expires_at), error=s.error, errors=[JobImageError(image=i, error=e) for i, e in s.errors],
        links=JobLinks(self=f"/jobs/{s.id}", results=f"/jobs/{s.id}/results"))


# The form is read by the route itself (it streams the archive), so FastAPI cannot document it.
_JOB_BODY = {
    "required": True,
    "content": {
        "multipart/form-data": {"schema": {"$ref": "#/components/schemas/JobUploadForm"}},
        "application/json": {"schema": {"oneOf": [{"$ref": "#/components/schemas/DirectoryJobRequest"},
                                                  {"$ref": "#/components/schemas/UrlJobRequest"}]}},
    },
}


def document_outputs(schema: dict) -> None:
    """The texts of the results routes that list the output kinds, from the table as it is when
    the schema is built (so they cannot drift from it)."""
    paths = schema.get("paths", {})
    results = paths.get(RESULTS_PATH, {}).get("get")
    if results is not None:
        results["responses"]["200"]["description"] = kinds.results_zip_text()
    one = paths.get(RESULT_FILE_PATH, {}).get("get")
    if one is not None:
        one["responses"]["200"]["content"] = {m: {} for m in dict.fromkeys(
            k.media_type for k in kinds.OUTPUT_KINDS.values())}


@public_router.get("/outputs", response_model=list[OutputKindPublic], summary="The output kinds a job can ask for.",
                   description="From the output-kinds table, in its order: each kind's file extension, media type, "
                               "title and description, the whole-job files it adds to the results zip and the job "
                               "options it needs. Public (no API key).")
def list_outputs() -> list[OutputKindPublic]:
    return [OutputKindPublic(**k.public()) for k in kinds.OUTPUT_KINDS.values()]


@router.post("/jobs", status_code=202, response_model=JobPublic, summary="Submit a batch job.",
             description="multipart/form-data with an `archive` (zip/tar of images) or a `manifest` (JSONL/CSV of "
                         "image URIs), or JSON `{\"directory\": ...}` naming a folder under SEAM_ALLOWED_ROOT, or JSON "
                         "`{\"input_url\": ...}` naming a data set where it lives (an s3:// prefix or a manifest URL; "
                         "docs/storage.md). Answers 202 with the job; poll `GET /jobs/{id}`.",
             openapi_extra={"requestBody": _JOB_BODY}, responses={403: {"model": ErrorResponse}, **_E})
async def create_job(request: Request, settings: SettingsDep, store: StoreDep, storage: StorageDep,
                     dispatcher: DispatcherDep, engine: EngineDep, principal: PrincipalDep,
                     holder: HolderDep) -> JSONResponse:
    svc = JobServices(settings=settings, store=store, storage=storage, dispatcher=dispatcher, engine=engine,
                      registry=holder if isinstance(holder, ModelRegistry) else None)
    snap = await submit(request, svc, principal.owner)
    return JSONResponse(to_public(snap).model_dump(mode="json"), status_code=202,
                        headers={"Location": f"/jobs/{snap.id}"})


@router.get("/jobs", response_model=JobList, summary="List jobs, newest first.",
            description="Only the jobs of the caller's API key (every job for admin keys).", responses={401: _E[401]})
def list_jobs(store: StoreDep, principal: PrincipalDep, offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
              limit: Annotated[int, Query(ge=1, le=100)] = 20) -> JobList:
    total, snaps = store.list(offset, limit, owner=principal.list_filter)
    return JobList(jobs=[to_public(s) for s in snaps], total=total, offset=offset, limit=limit)


@router.get("/jobs/{job_id}", response_model=JobPublic, summary="Job status.", responses=_E)
def get_job(job_id: JobId, store: StoreDep, principal: PrincipalDep) -> JobPublic:
    return to_public(visible_snapshot(store, job_id, principal))


@router.delete("/jobs/{job_id}", response_model=JobPublic, summary="Cancel a job.",
               description="Queued and running jobs stop after the image in progress; finished jobs are unchanged. "
                           "The job's inputs are deleted once it has stopped; its outputs are kept until the TTL.",
               responses=_E)
def cancel_job(job_id: JobId, store: StoreDep, storage: StorageDep, principal: PrincipalDep) -> JobPublic:
    visible_snapshot(store, job_id, principal)
    if store.cancel(job_id) and storage.has_job(job_id):
        # Nothing new starts on a cancelled job; an image in progress that loses its
        # input is recorded failed, which is moot for a cancelled job.
        storage.delete_inputs(job_id)
    return to_public(visible_snapshot(store, job_id, principal))


@router.get(RESULTS_PATH, summary="All outputs as a zip (streamed).", response_class=StreamingResponse,
            responses={200: {"content": {"application/zip": {"schema": {"type": "string", "format": "binary"}}},
                             "description": "zip (document_outputs lists the members)"}, **_E})
def job_results(job_id: JobId, store: StoreDep, storage: StorageDep, holder: HolderDep,
                principal: PrincipalDep, settings: SettingsDep) -> StreamingResponse:
    snap = visible_snapshot(store, job_id, principal)
    if snap.active:
        raise ApiError(409, "job_not_finished", f"job is {snap.state} ({snap.done + snap.failed}/{snap.total}); "
                                                "results are available once it has finished", {"Retry-After": "5"})
    try:
        manifest = storage.read_manifest(job_id)
    except FileNotFoundError:
        raise ApiError(404, "not_found", f"the files of job {job_id} are gone") from None
    if manifest.get("output_url"):  # outputs went to the user's prefix: its results manifest, not a zip
        return results_manifest(settings, store, storage, job_id, manifest["output_url"])
    names = manifest.get("classes")  # recorded at submission: independent of the model loaded now
    if names is None:  # a job from before class names were recorded
        names = holder.get().foreground_classes()
    extra = {"job.json": to_public(snap).model_dump_json(indent=1).encode()}
    full = visible_snapshot(store, job_id, principal, errors_limit=1_000_000)
    # failed images, then the archive members that were never images (skipped at submission)
    listed = [{"image": i, "error": e} for i, e in full.errors]
    listed += [{"file": f, "skipped": why} for f, why in sorted((manifest.get("skipped") or {}).items())]
    extra["errors.json"] = json.dumps(listed, indent=1).encode()
    extra.update(result_extras(storage, job_id, manifest, names, snap.options.get("outputs", [])))
    return StreamingResponse(storage.stream_results_zip(job_id, extra), media_type="application/zip",
                             headers={"Content-Disposition": f'attachment; filename="seam-{job_id}.zip"'})


def results_manifest(settings: Settings, store, storage, job_id: str, output_url: str) -> StreamingResponse:
    """`<output_url>/results.jsonl` of an ended job, streamed (docs/storage.md: one line per image)."""
    prefix = dataset_reader(settings).prefix_store(output_url)
    if not prefix.exists("results.jsonl"):
        # the process that ended the job writes it just after recording the end (or died in between):
        # every chunk's part is there, so it is made here; the same parts give the same file
        stream_chunks.finalize(storage, store, stream_chunks.OutputPrefix(prefix), job_id)
    try:
        body = prefix.iter_bytes("results.jsonl")
    except FileNotFoundError:
        raise ApiError(404, "not_found", f"no results manifest at {output_url}results.jsonl") from None
    return StreamingResponse(body, media_type="application/x-ndjson",
                             headers={"X-Seam-Results": f"{output_url}results.jsonl"})


@router.get(RESULT_FILE_PATH.replace("{name}", "{name:path}"), summary="One output file.",
            description="`kind`: an output kind (GET /outputs); `name`: the image id (its path in the archive without "
                        "extension), with or without the output's extension.",
            response_class=FileResponse,
            responses={200: {"content": {"application/octet-stream": {}}, "description": "The file."}, **_E})
def job_result_file(job_id: JobId, kind: OutputKindName, name: str, store: StoreDep, storage: StorageDep,
                    principal: PrincipalDep) -> FileResponse:
    visible_snapshot(store, job_id, principal)
    path = storage.resolve_output(job_id, kind, name)
    if path is None:
        where = ""
        with contextlib.suppress(FileNotFoundError):
            if url := storage.read_manifest(job_id).get("output_url"):
                where = f": the job wrote its outputs to {url} ({url}{kind}/<image id>{kinds.get(kind).extension})"
        raise ApiError(404, "not_found", f"no {kind} output named {name[:200]!r} in job {job_id}{where}")
    return FileResponse(path, media_type=kinds.get(kind).media_type, filename=path.name)
