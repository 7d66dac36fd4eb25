"""The loaded model repository."""
from __future__ import annotations

from fastapi import APIRouter
from seam.service.api.deps import EngineDep
from seam.service.schemas import ErrorResponse, ModelPublic, ModelsResponse

router = APIRouter(tags=["models"])


@router.get("/models", response_model=ModelsResponse, summary="Loaded models, classes and methods.",
            description="Each model with what it knows (`description`, from its manifest); `description`, "
                        "`class_threshold` and `default_threshold` at the top are the segmenting model's.",
            responses={503: {"model": ErrorResponse}})
def list_models(engine: EngineDep) -> ModelsResponse:
    methods = engine.methods()
    infos = engine.models()
    # the model whose classes the answers name: SEAM's CAMs, else DeepLab
    main = next((m for kind in ("seam", "deeplab") for m in infos if m.kind == kind), None)
    return ModelsResponse(
        models=[ModelPublic(name=m.name, kind=m.kind, backbone=m.backbone, classes=m.classes, provider=m.provider,
                            description=m.description) for m in infos],
        classes=engine.foreground_classes(), methods=methods, default_method=methods[0] if methods else None,
        description=main.description if main else None, class_threshold=main.cls_threshold if main else None,
        default_threshold=main.bg_threshold if main else None)
