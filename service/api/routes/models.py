"""The loaded model repository."""
from __future__ import annotations

from fastapi import APIRouter

from service.api.deps import EngineDep
from service.schemas import ErrorResponse, ModelPublic, ModelsResponse

router = APIRouter(tags=["models"])


@router.get("/models", response_model=ModelsResponse, summary="Loaded models, classes and methods.",
            responses={503: {"model": ErrorResponse}})
def list_models(engine: EngineDep) -> ModelsResponse:
    methods = engine.methods()
    return ModelsResponse(
        models=[ModelPublic(name=m.name, kind=m.kind, backbone=m.backbone, classes=m.classes, provider=m.provider)
                for m in engine.models()],
        classes=engine.foreground_classes(), methods=methods, default_method=methods[0] if methods else None)
