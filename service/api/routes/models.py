"""The model repository: what is loaded (GET /models) and, for admin keys, promote / roll back."""
from __future__ import annotations

import threading

from fastapi import APIRouter
from seam.service.api.deps import EngineDep, HolderDep, PrincipalDep, SettingsDep
from seam.service.core.errors import ApiError
from seam.service.core.registry import ModelRegistry
from seam.service.engine import methods as method_table
from seam.service.schemas import (
    ErrorResponse,
    MethodPublic,
    ModelPublic,
    ModelsResponse,
    PromoteRequest,
    PromotionResponse,
    RepositoryModelPublic,
)
from starlette.concurrency import run_in_threadpool

from seam.modelrepo import versions as repo_versions

router = APIRouter(tags=["models"])


@router.get("/models", response_model=ModelsResponse, summary="Loaded models, classes and methods.",
            description="Each model with what it knows (`description`, from its manifest) and the methods that run "
                        "it; `method_details` says what each available method needs and does (the web page's "
                        "method lists); `description`, `class_threshold` and `default_threshold` at the top are "
                        "the segmenting model's. All these describe the default model's serving version "
                        "(`default_model`); `repository` lists every name, its versions, the promoted one, "
                        "their load state (a refused version says why) and provenance.",
            responses={503: {"model": ErrorResponse}})
def list_models(engine: EngineDep, holder: HolderDep) -> ModelsResponse:
    methods = engine.methods()
    # an engine may offer what this process's table lacks (a worker's own registration): its name only
    specs = [method_table.METHODS[m] for m in methods if m in method_table.METHODS]
    infos = engine.models()
    # the model whose classes the answers name: SEAM's CAMs, else DeepLab
    main = next((m for kind in ("seam", "deeplab") for m in infos if m.kind == kind), None)
    registry = holder if isinstance(holder, ModelRegistry) else None
    return ModelsResponse(
        models=[ModelPublic(name=m.name, kind=m.kind, backbone=m.backbone, classes=m.classes, provider=m.provider,
                            description=m.description, methods=[s.name for s in specs if m.kind in s.models])
                for m in infos],
        classes=engine.foreground_classes(), methods=methods,
        method_details=[MethodPublic(**s.public()) for s in specs],
        default_method=method_table.best(methods, "sync"),
        description=main.description if main else None, class_threshold=main.cls_threshold if main else None,
        default_threshold=main.bg_threshold if main else None,
        default_model=registry.default_ref() if registry else None,
        repository=[RepositoryModelPublic(**row) for row in registry.status()] if registry else [])


_ADMIN = {403: {"model": ErrorResponse, "description": "Not an admin key."},
          404: {"model": ErrorResponse, "description": "No such model or version."},
          409: {"model": ErrorResponse, "description": "The model repository is read-only in this process."},
          422: {"model": ErrorResponse, "description": "Legacy model, refused (corrupt) version, nothing to roll "
                                                       "back to."}}


def _admin_repo(principal, settings) -> None:
    if not principal.admin:
        raise ApiError(403, "forbidden", "promoting and rolling back models needs an admin key (SEAM_ADMIN_API_KEYS)")
    if settings.engine == "fake":
        raise ApiError(422, "no_repository", "the fake engine has no model repository")


def _changed(holder: HolderDep) -> None:
    """Load the new promoted version now (in the background) rather than at the next poll."""
    if isinstance(holder, ModelRegistry):
        threading.Thread(target=holder.refresh, name="seam-models-promote", daemon=True).start()


async def _call(fn, *args):
    try:
        return await run_in_threadpool(fn, *args)
    except repo_versions.ModelNotFound as exc:
        raise ApiError(404, "model_not_found", str(exc)) from None
    except ValueError as exc:  # a legacy model, a corrupt version (ManifestError), nothing to roll back to
        raise ApiError(422, "cannot_promote", str(exc)) from None
    except OSError as exc:  # e.g. the repository is mounted read-only in this container
        raise ApiError(409, "repository_read_only", f"cannot write to the model repository here ({exc.strerror}); "
                                                    "promote where it is writable (`seam models promote`)") from None


@router.post("/models/{name}/promote", response_model=PromotionResponse, responses=_ADMIN,
             summary="Promote a version (admin).",
             description="Makes `version` the one requests without a version get (its checksums are verified "
                         "first). API and workers switch to it when they have loaded it (hot reload); in-flight "
                         "requests finish on the version they started with.")
async def promote(name: str, body: PromoteRequest, principal: PrincipalDep, settings: SettingsDep,
                  holder: HolderDep) -> PromotionResponse:
    _admin_repo(principal, settings)
    before = await _call(repo_versions.resolve, settings.models_dir, name)
    got = await _call(repo_versions.promote, settings.models_dir, name, body.version)
    _changed(holder)
    return PromotionResponse(name=name, promoted=got, previous=before.version)


@router.post("/models/{name}/rollback", response_model=PromotionResponse, responses=_ADMIN,
             summary="Roll back to the previously promoted version (admin).")
async def rollback(name: str, principal: PrincipalDep, settings: SettingsDep, holder: HolderDep) -> PromotionResponse:
    _admin_repo(principal, settings)
    before = await _call(repo_versions.resolve, settings.models_dir, name)
    got = await _call(repo_versions.rollback, settings.models_dir, name)
    _changed(holder)
    return PromotionResponse(name=name, promoted=got, previous=before.version)
