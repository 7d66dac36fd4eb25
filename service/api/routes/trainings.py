"""Training jobs: `POST /trainings` (an archive upload, a folder under SEAM_ALLOWED_ROOT or a
finished job), progress, log, cancel and promotion. A training belongs to the API key that
submitted it, like a job: other keys get 404 for it unless they are admin keys. The work is
`seam.service.trainings` (submission, the trainers); the trainer side is `seam trainer`."""
from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi import Path as PathParam
from fastapi.responses import JSONResponse, PlainTextResponse
from seam.service.api.deps import PrincipalDep, SettingsDep, StorageDep
from seam.service.core.errors import ApiError
from seam.service.schemas import ErrorResponse
from seam.service.trainings.schemas import (
    TrainingJsonRequest,
    TrainingLinks,
    TrainingList,
    TrainingOptions,
    TrainingPublic,
)
from seam.service.trainings.store import ID_PATTERN, TrainingRecord, TrainingStore
from seam.service.trainings.submit import TrainingServices, submit

from seam.modelrepo.trainings import request_cancel
from seam.modelrepo.versions import ModelEntry, ModelNotFound, find_model, promote

router = APIRouter(tags=["trainings"])
OPENAPI_MODELS = (TrainingJsonRequest, TrainingOptions)
TrainingId = Annotated[str, PathParam(pattern=ID_PATTERN, description="Training id (32 hex digits).")]
_E = {code: {"model": ErrorResponse} for code in (401, 403, 404, 409, 410, 413, 415, 422, 503, 507)}
_BODY = {"required": True, "content": {
    "multipart/form-data": {"schema": {"type": "object", "required": ["archive", "name"], "properties": {
        "archive": {"type": "string", "format": "binary",
                    "description": "zip/tar: images, labels.csv (image,class;class), optional SegmentationClass/"},
        "name": {"type": "string"}, "classes": {"type": "string", "description": "comma-separated"},
        "stages": {"type": "string", "enum": ["seam", "seam+rw", "pipeline", "deeplab"]},
        "recipe": {"type": "string", "description": "JSON object (RecipeRequest)"},
        "base_model": {"type": "string"}, "budget_s": {"type": "number"}, "promote": {"type": "boolean"},
        "heldout_fraction": {"type": "number"}}}},
    "application/json": {"schema": {"$ref": "#/components/schemas/TrainingJsonRequest"}},
}}


def _store(request: Request) -> TrainingStore:
    return request.app.state.trainings


def _ts(v: float | None) -> datetime | None:
    return None if v is None else datetime.fromtimestamp(v, tz=UTC)


def _entry(models_dir, name: str | None) -> ModelEntry | None:
    """The model `name` in the repository now; None when it (or the repository) is not there."""
    try:
        return find_model(models_dir, name or "")
    except (OSError, ValueError):
        return None


def _promoted(models_dir, recs: list[TrainingRecord]) -> dict[str, int | None]:
    """The promoted version of each model these trainings published, each model read once."""
    names = {r.status.model for r in recs if r.status.model}
    return {n: e.promoted if (e := _entry(models_dir, n)) is not None else None for n in names}


def to_public(rec: TrainingRecord, models_dir, promoted: dict[str, int | None] | None = None) -> TrainingPublic:
    """`promoted`: `_promoted` of a list the record is in (read here when not given)."""
    s, spec = rec.status, rec.spec
    if promoted is None:
        promoted = _promoted(models_dir, [rec])
    return TrainingPublic(
        id=rec.id, name=spec.name if spec else None, stages=spec.stages if spec else None, source=rec.source,
        state=s.state, cancel_requested=rec.cancel_requested and not s.terminal, stage=s.stage, epoch=s.epoch,
        epochs=s.epochs, step=s.step, steps=s.steps, loss=s.loss, eta_s=s.eta_s, elapsed_s=s.elapsed_s,
        budget_s=spec.budget_s if spec else None, evaluation=s.evaluation, error=s.error,
        model=f"{s.model}:{s.version}" if s.model and s.version else None, version=s.version,
        promoted=s.version is not None and promoted.get(s.model or "") == s.version,
        promote_note=s.promote_note, attempts=s.attempts,
        resumed=s.resumed, created_at=_ts(rec.created_at), started_at=_ts(s.started_at),
        finished_at=_ts(s.finished_at) if s.terminal else None,
        links=TrainingLinks(self=f"/trainings/{rec.id}", log=f"/trainings/{rec.id}/log",
                            cancel=f"/trainings/{rec.id}/cancel", promote=f"/trainings/{rec.id}/promote"))


@router.post("/trainings", status_code=202, response_model=TrainingPublic, summary="Start a training.",
             description="multipart/form-data with an `archive` (images + labels.csv, optional SegmentationClass/ "
                         "ground truth) and the options as fields, or JSON with a `folder` under SEAM_ALLOWED_ROOT "
                         "or a finished `job_id`. Answers 202; poll `GET /trainings/{id}`. On success the models "
                         "are published as the next version of `name`.",
             openapi_extra={"requestBody": _BODY}, responses=_E)
async def create_training(request: Request, settings: SettingsDep, storage: StorageDep,
                          principal: PrincipalDep) -> JSONResponse:
    svc = TrainingServices(settings, _store(request), request.app.state.trainers, storage,
                           getattr(request.app.state, "store", None))
    tid = await submit(request, svc, principal)
    rec = svc.trainings.visible(tid, principal)
    return JSONResponse(to_public(rec, settings.models_dir).model_dump(mode="json"), status_code=202,
                        headers={"Location": f"/trainings/{tid}"})


@router.get("/trainings", response_model=TrainingList, summary="List trainings, newest first.",
            description="The caller's key's trainings (every one for admin keys).", responses={401: _E[401]})
def list_trainings(request: Request, settings: SettingsDep, principal: PrincipalDep,
                   limit: Annotated[int, Query(ge=1, le=200)] = 50) -> TrainingList:
    recs = _store(request).list(principal)[:limit]
    promoted = _promoted(settings.models_dir, recs)
    return TrainingList(trainings=[to_public(r, settings.models_dir, promoted) for r in recs])


@router.get("/trainings/{training_id}", response_model=TrainingPublic, summary="A training's progress.",
            description="State, stage, epoch and step, loss, ETA, the held-out evaluation (the new version's and "
                        "the promoted one's mIoU on the same images) and the published version.", responses=_E)
def get_training(training_id: TrainingId, request: Request, settings: SettingsDep,
                 principal: PrincipalDep) -> TrainingPublic:
    return to_public(_store(request).visible(training_id, principal), settings.models_dir)


@router.get("/trainings/{training_id}/log", response_class=PlainTextResponse, summary="A training's log.",
            responses={200: {"content": {"text/plain": {}}}, **_E})
def training_log(training_id: TrainingId, request: Request, principal: PrincipalDep,
                 tail_bytes: Annotated[int, Query(ge=1, le=16 << 20)] = 1 << 20) -> PlainTextResponse:
    store = _store(request)
    return PlainTextResponse(store.log_tail(store.visible(training_id, principal), tail_bytes))


@router.post("/trainings/{training_id}/cancel", response_model=TrainingPublic, summary="Cancel a training.",
             description="A queued training never starts; a running one stops at its next step (its checkpoints "
                         "are kept). A finished training is unchanged.", responses=_E)
def cancel_training(training_id: TrainingId, request: Request, settings: SettingsDep,
                    principal: PrincipalDep) -> TrainingPublic:
    store = _store(request)
    rec = store.visible(training_id, principal)
    if not rec.status.terminal:
        request_cancel(rec.dir)
        request.app.state.trainers.cancelled_before_start(training_id)
    return to_public(store.visible(training_id, principal), settings.models_dir)


@router.post("/trainings/{training_id}/promote", response_model=TrainingPublic,
             summary="Promote the version a training published.",
             description="Allowed when its held-out mIoU was not below the promoted version's (the one it was "
                         "compared with, still promoted); `force=true` (admin keys) promotes anyway (no comparison, "
                         "or a worse one: recorded in the model's history).", responses=_E)
def promote_training(training_id: TrainingId, request: Request, settings: SettingsDep, principal: PrincipalDep,
                     force: bool = False) -> TrainingPublic:
    store = _store(request)
    rec = store.visible(training_id, principal)
    s = rec.status
    if s.state != "succeeded" or s.model is None or s.version is None:
        raise ApiError(409, "training_not_finished", f"training {training_id} is {s.state}: no version to promote")
    if force and not principal.admin:  # the comparison is the owner's guard; overriding it is an admin's call
        raise ApiError(403, "forbidden", "force=true needs an admin key (SEAM_ADMIN_API_KEYS); without it a "
                                         "version is promoted when its evaluation is not worse")
    entry = _entry(settings.models_dir, s.model)
    if entry is None or s.version not in entry.versions:
        raise ApiError(404, "model_not_found", f"{s.model}:{s.version} is no longer in the model repository")
    if not force:
        _check_promotable(rec, entry)
    try:
        note = f"training {training_id}" + (" (forced)" if force else "")
        promote(settings.models_dir, s.model, s.version, note=note)
    except ModelNotFound as exc:
        raise ApiError(404, "model_not_found", str(exc)) from None
    except ValueError as exc:  # a corrupt version (checksums) or a legacy name
        raise ApiError(409, "not_promotable", str(exc)) from None
    except OSError as exc:  # a repository mounted read-only for the API
        raise ApiError(503, "repository_not_writable", f"the model repository cannot be written here: "
                                                       f"{exc.strerror or exc}") from None
    return to_public(store.visible(training_id, principal), settings.models_dir)


def _check_promotable(rec: TrainingRecord, entry: ModelEntry) -> None:
    s, ev = rec.status, rec.status.evaluation
    current = f"{s.model}:{entry.promoted}" if entry.promoted is not None else None
    if current == f"{s.model}:{s.version}":
        return
    if ev is None or not ev.comparable or ev.new is None or ev.promoted is None:
        raise ApiError(409, "not_comparable", f"{s.model}:{s.version} has no held-out comparison with the promoted "
                                              f"version ({(ev.note if ev else None) or 'no ground truth'}); "
                                              "promote with force=true if you mean it")
    if ev.promoted_ref != current:
        raise ApiError(409, "promoted_changed", f"it was compared with {ev.promoted_ref}, but {current} is promoted "
                                                "now; promote with force=true if you mean it")
    if ev.new < ev.promoted:
        raise ApiError(409, "worse", f"held-out mIoU {ev.new}% is below {ev.promoted_ref}'s {ev.promoted}%; "
                                     "promote with force=true if you mean it")


