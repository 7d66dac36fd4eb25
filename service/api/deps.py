"""Typed dependencies: what a route needs, read from `app.state` (set up by `create_app`)."""
from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request, Security
from fastapi.security import APIKeyHeader
from seam.service.core.config import Settings
from seam.service.core.engine_holder import EngineHolder
from seam.service.core.limits import InflightLimiter
from seam.service.core.metrics import Metrics
from seam.service.core.security import API_KEY_HEADER, Principal, authenticate
from seam.service.engine.base import InferenceEngine
from seam.service.jobs.dispatch import Dispatcher
from seam.service.jobs.stores.base import JobStore
from seam.service.storage import Storage

api_key_header = APIKeyHeader(name=API_KEY_HEADER, auto_error=False,
                              description="Required when the server is configured with SEAM_API_KEYS.")


def get_settings_dep(request: Request) -> Settings:
    return request.app.state.settings


SettingsDep = Annotated[Settings, Depends(get_settings_dep)]


def require_api_key(settings: SettingsDep, key: Annotated[str | None, Security(api_key_header)] = None) -> Principal:
    """401 without a valid key (requests with a body were already checked, before their
    body was read, by ApiKeyMiddleware); the caller as a Principal."""
    return authenticate(key, settings.api_keys, settings.admin_api_keys)


def get_holder(request: Request) -> EngineHolder:
    return request.app.state.holder


def get_engine(request: Request) -> InferenceEngine:
    return request.app.state.holder.get()


def get_store(request: Request) -> JobStore:
    return request.app.state.store


def get_storage(request: Request) -> Storage:
    return request.app.state.storage


def get_dispatcher(request: Request) -> Dispatcher:
    return request.app.state.dispatcher


def get_metrics(request: Request) -> Metrics:
    return request.app.state.metrics


def get_limiter(request: Request) -> InflightLimiter:
    return request.app.state.limiter


PrincipalDep = Annotated[Principal, Depends(require_api_key)]
HolderDep = Annotated[EngineHolder, Depends(get_holder)]
EngineDep = Annotated[InferenceEngine, Depends(get_engine)]
StoreDep = Annotated[JobStore, Depends(get_store)]
StorageDep = Annotated[Storage, Depends(get_storage)]
DispatcherDep = Annotated[Dispatcher, Depends(get_dispatcher)]
MetricsDep = Annotated[Metrics, Depends(get_metrics)]
LimiterDep = Annotated[InflightLimiter, Depends(get_limiter)]
