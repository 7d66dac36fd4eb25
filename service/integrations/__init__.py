"""Labelling-tool integrations: the Label Studio ML backend, CVAT functions and the
pre-annotation files both tools import."""
from __future__ import annotations

from fastapi import FastAPI


def install(app: FastAPI) -> None:
    """Routes of both tools; call after the app's other middleware (Label Studio's Basic-auth
    translation must run before the API-key check)."""
    from service.integrations import cvat, labelstudio

    labelstudio.install(app)
    cvat.install(app)
