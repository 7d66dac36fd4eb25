"""`/corrections`: what annotators corrected in Label Studio or CVAT, and the fits made from it.

    GET  /corrections                              the caller's projects: corrections, images, fits
    GET  /corrections/{source}/{project}           one project, with its images and fits
    POST /corrections                              CVAT: a "Segmentation mask 1.1" export zip for a task
    POST /corrections/labelstudio/{project}/sync   re-read every task of a Label Studio project
    POST /corrections/{source}/{project}/fit       start a fit (a training job) from the corrections

A project belongs to the API key that configured it (Label Studio: the key of Connect Model,
seen at /labelstudio/setup; CVAT: the key of the first upload); another key gets 404, as for jobs.
"""
from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Body, Depends, FastAPI, File, Form, Path, Request, UploadFile
from seam.service.api.deps import EngineDep, SettingsDep, require_api_key
from seam.service.core.errors import ApiError
from seam.service.core.security import Principal
from seam.service.core.urlrules import UrlRefused
from seam.service.corrections.store import CorrectionError, NotOwner, ProjectStore
from seam.service.integrations.corrections_fit import (
    FitRequest,
    fit_if_due,
    served_for,
    settings_of,
    start_fit,
    store_of,
    submitter_of,
)
from seam.service.integrations.cvat_corrections import read_segmentation_mask_zip
from seam.service.integrations.fetch import FetchFailed
from seam.service.integrations.labelstudio import policy_for
from seam.service.integrations.ls_corrections import ProjectSync
from seam.service.integrations.ls_events import ensure_webhook_auth
from seam.service.integrations.ls_settings import ls_settings
from starlette.concurrency import run_in_threadpool

router = APIRouter(prefix="/corrections", tags=["corrections"])
PrincipalDep = Annotated[Principal, Depends(require_api_key)]
Source = Literal["labelstudio", "cvat"]
ProjectId = Annotated[str, Path(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")]


def install(app: FastAPI) -> None:
    app.include_router(router)


def summary(p: ProjectStore) -> dict:
    meta = p.meta()
    items = p.items()
    return {"source": p.source, "project": p.project, "classes": meta.get("classes", []),
            "corrections": sum(1 for it in items if it.get("mask")), "images": len(items),
            "changes_since_fit": meta.get("changes_since_fit", 0), "fits": meta.get("fits", []),
            "last_event": meta.get("last_event")}


def owned(request: Request, source: str, project: str, principal: Principal) -> ProjectStore:
    """The caller's project, or 404 (someone else's looks like none)."""
    try:
        p = store_of(request.app).project(source, project)
        p.check_owner(principal.owner, principal.admin)
    except (FileNotFoundError, NotOwner):
        raise ApiError(404, "not_found", f"no corrections for {source} project {project}") from None
    except CorrectionError as exc:
        raise ApiError(422, "invalid_project", str(exc)) from None
    return p


@router.get("", summary="The caller's labelling projects with corrections.")
def list_projects(request: Request, principal: PrincipalDep) -> dict:
    out = [summary(p) for p in store_of(request.app).projects() if principal.may_see(p.meta().get("owner", ""))]
    return {"projects": out}


@router.get("/{source}/{project}", summary="One project's corrections and fits.")
def get_project(source: Source, project: ProjectId, request: Request, principal: PrincipalDep) -> dict:
    p = owned(request, source, project, principal)
    items = [{k: it.get(k) for k in ("image_id", "labels", "width", "height", "updated", "ref")} | {
        "corrected": bool(it.get("mask"))} for it in p.items()]
    return summary(p) | {"items": items}


@router.post("", summary="CVAT: a task's corrected masks (\"Segmentation mask 1.1\" export zip).",
             description="Export the CVAT task as *Segmentation mask 1.1* (with *Save images* the first time) and "
                         "upload the zip. Labels are the model's class names; every frame is validated before "
                         "anything is stored (unknown label or colour, wrong mask size, a frame whose image was "
                         "never sent: 422 naming it).", status_code=200)
def upload_cvat(request: Request, principal: PrincipalDep, engine: EngineDep,
                task: Annotated[str, Form(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$",
                                          description="The CVAT task id.")],
                archive: Annotated[UploadFile, File(description="The Segmentation mask 1.1 zip.")]) -> dict:
    p = store_of(request.app).project("cvat", task)
    classes = engine.foreground_classes()
    try:
        p.claim(principal.owner, classes, principal.admin)
    except NotOwner:
        raise ApiError(404, "not_found", f"CVAT task {task} belongs to another API key") from None
    data = archive.file.read()
    try:
        corrections = read_segmentation_mask_zip(data, classes, settings_of(request.app).max_zip_bytes)
        changes = p.put_many(corrections)
    except CorrectionError as exc:
        raise ApiError(422, "invalid_corrections", str(exc)) from None
    fit = fit_if_due(request.app, p, principal)
    return summary(p) | {"changes": {c.image_id: ch.value for c, ch in zip(corrections, changes, strict=True)},
                         "fit_started": fit}


@router.post("/labelstudio/{project}/sync", summary="Label Studio: re-read every task of a project.",
             description="Repairs missed webhook events: every task's latest annotation becomes its correction, "
                         "tasks without one are cached for the next fit, corrections of deleted tasks go. Also "
                         "puts this key's Basic auth on the project's ML-backend webhook.")
async def sync_labelstudio(project: ProjectId, request: Request, principal: PrincipalDep,
                           settings: SettingsDep) -> dict:
    ls = ls_settings(request)
    policy = policy_for(ls, settings.max_upload_bytes)  # 503 when not configured, before any model is loaded
    classes = (await run_in_threadpool(served_for, request.app, "labelstudio")).engine.foreground_classes()
    p = store_of(request.app).project("labelstudio", project)
    try:
        p.claim(principal.owner, classes, principal.admin)
    except NotOwner:
        raise ApiError(404, "not_found", f"Label Studio project {project} belongs to another API key") from None
    sync = ProjectSync(policy, p, classes, ls.labels_field)
    try:
        counts = await run_in_threadpool(sync.sync_project)
    except FetchFailed as exc:
        if exc.status == 404:
            raise ApiError(404, "not_found", f"Label Studio has no project {project}") from None
        raise _unreachable(project, exc) from None
    except UrlRefused as exc:
        raise _unreachable(project, exc) from None
    except CorrectionError as exc:
        raise ApiError(422, "invalid_corrections", str(exc)) from None
    hooked = await run_in_threadpool(ensure_webhook_auth, policy, p, request.headers.get("x-api-key"))
    fit = await run_in_threadpool(fit_if_due, request.app, p, principal)
    return summary(p) | {"synced": counts, "webhooks_authorised": hooked, "fit_started": fit}


@router.post("/{source}/{project}/fit", summary="Start a fit: a training job on the corrections.", status_code=202)
async def fit(source: Source, project: ProjectId, request: Request, principal: PrincipalDep,
              body: Annotated[FitRequest | None, Body()] = None) -> dict:
    p = owned(request, source, project, principal)
    served = await run_in_threadpool(served_for, request.app, source)
    return await run_in_threadpool(start_fit, p, principal, served, request.app.state.settings.max_pixels,
                                   body or FitRequest(), settings_of(request.app), submitter_of(request.app),
                                   "requested")


def _unreachable(project: str, exc: Exception) -> ApiError:
    # 424: what failed is Label Studio (or the way to it), not this request nor this server
    return ApiError(424, "labelstudio_unreachable", f"project {project}: {exc}")
