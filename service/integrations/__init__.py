"""Labelling-tool integrations, the service's top floor below the app: the Label Studio ML
backend and the CVAT detector routes (with what only they use: label-config parsing, the
guarded image fetch, the CVAT SDK function). The files both tools import (pre-annotations)
are an output kind: seam.service.outputs.labelling."""
from __future__ import annotations

from fastapi import FastAPI


def install(app: FastAPI) -> None:
    """Routes of both tools; call after the app's other middleware (Label Studio's Basic-auth
    translation must run before the API-key check)."""
    from seam.service.integrations import corrections_routes, cvat, labelstudio, ls_webhook

    labelstudio.install(app)
    ls_webhook.install(app)
    cvat.install(app)
    corrections_routes.install(app)
