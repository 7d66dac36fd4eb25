"""`POST /labelstudio/webhook`: Label Studio's events (ls_events.py says how they arrive).

Annotation events are answered at once (201) once the key and the project's owner are checked;
reading the task back from Label Studio and storing the correction runs after the answer
(Label Studio waits 1 s for a webhook). START_TRAINING starts a fit and answers its record.
"""
from __future__ import annotations

import logging
from typing import Annotated, Any

import seam.service.integrations.ls_events as ls_events
from fastapi import APIRouter, BackgroundTasks, Body, Depends, FastAPI, Request
from fastapi.responses import JSONResponse
from seam.service.api.deps import SettingsDep, require_api_key
from seam.service.core.errors import ApiError
from seam.service.core.security import Principal
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
from seam.service.integrations.labelstudio import PREFIX, policy_for, require_key
from seam.service.integrations.ls_corrections import ProjectSync, project_id
from seam.service.integrations.ls_settings import ls_settings
from starlette.concurrency import run_in_threadpool

log = logging.getLogger("seam.service")
router = APIRouter(prefix=PREFIX, tags=["labelstudio"], dependencies=[Depends(require_key)])


def install(app: FastAPI) -> None:
    app.include_router(router)


def _project(request: Request, body: dict, principal: Principal, classes: list[str]) -> ProjectStore:
    try:
        p = store_of(request.app).project("labelstudio", project_id(body.get("project")))
        p.claim(principal.owner, classes, principal.admin)  # configured at /setup; claimed here if not
    except CorrectionError as exc:
        raise ApiError(422, "invalid_event", str(exc)) from None
    except NotOwner:
        raise ApiError(403, "not_owner", "this Label Studio project was connected with another API key") from None
    return p


def _work(app: Any, sync: ProjectSync, work: ls_events.EventWork, principal: Principal) -> None:
    ls_events.run_event(work, sync)
    fit_if_due(app, sync.store, principal)


@router.post("/webhook", summary="Label Studio ML backend: annotation events and Start Training.",
             description="ANNOTATION_CREATED / UPDATED, ANNOTATIONS_DELETED, TASKS_DELETED: the task is read back "
                         "from Label Studio and its latest annotation stored as its correction (after the answer). "
                         "START_TRAINING: a fit. Other events: 200 `Unknown event`.")
async def webhook(body: Annotated[dict[str, Any], Body()], request: Request, background: BackgroundTasks,
                  settings: SettingsDep) -> JSONResponse:
    action = body.get("action")
    if action not in ls_events.EVENTS:
        return JSONResponse({"status": "Unknown event"}, status_code=200)
    principal = require_api_key(settings, request.headers.get("x-api-key"))
    served = await run_in_threadpool(served_for, request.app, "labelstudio")
    engine = served.engine
    store = _project(request, body, principal, engine.foreground_classes())
    if action == ls_events.TRAIN_EVENT:
        fit = await run_in_threadpool(start_fit, store, principal, served, settings.max_pixels, FitRequest(),
                                      settings_of(request.app), submitter_of(request.app), "START_TRAINING")
        return JSONResponse({"result": fit, "status": "ok"}, status_code=201)
    work = ls_events.EventWork.of(body)
    if not work.empty():
        ls = ls_settings(request)
        policy = policy_for(ls, settings.max_upload_bytes)
        sync = ProjectSync(policy, store, engine.foreground_classes(), ls.labels_field)
        background.add_task(_work, request.app, sync, work, principal)  # a thread, after the answer
    return JSONResponse({"result": None, "status": "ok"}, status_code=201)
