"""The loaded model repository."""
from __future__ import annotations

from fastapi import APIRouter
from seam.service.api.deps import EngineDep
from seam.service.engine import methods as method_table
from seam.service.schemas import ErrorResponse, MethodPublic, ModelPublic, ModelsResponse

router = APIRouter(tags=["models"])


@router.get("/models", response_model=ModelsResponse, summary="Loaded models, classes and methods.",
            description="Each model with what it knows (`description`, from its manifest) and the methods that run "
                        "it; `method_details` says what each available method needs and does (the web page's "
                        "method lists); `description`, `class_threshold` and `default_threshold` at the top are "
                        "the segmenting model's.",
            responses={503: {"model": ErrorResponse}})
def list_models(engine: EngineDep) -> ModelsResponse:
    methods = engine.methods()
    # an engine may offer what this process's table lacks (a worker's own registration): its name only
    specs = [method_table.METHODS[m] for m in methods if m in method_table.METHODS]
    infos = engine.models()
    # the model whose classes the answers name: SEAM's CAMs, else DeepLab
    main = next((m for kind in ("seam", "deeplab") for m in infos if m.kind == kind), None)
    return ModelsResponse(
        models=[ModelPublic(name=m.name, kind=m.kind, backbone=m.backbone, classes=m.classes, provider=m.provider,
                            description=m.description, methods=[s.name for s in specs if m.kind in s.models])
                for m in infos],
        classes=engine.foreground_classes(), methods=methods,
        method_details=[MethodPublic(**s.public()) for s in specs],
        default_method=method_table.best(methods, "sync"),
        description=main.description if main else None, class_threshold=main.cls_threshold if main else None,
        default_threshold=main.bg_threshold if main else None)
