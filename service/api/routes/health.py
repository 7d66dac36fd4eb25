"""Liveness, readiness and Prometheus metrics."""
from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from seam.service.api.deps import SettingsDep, api_key_header
from seam.service.core.errors import server_roots
from seam.service.core.redact import redact
from seam.service.core.security import authenticate
from seam.service.schemas import Check, ErrorDetail, Health, Readiness
from starlette.concurrency import run_in_threadpool

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=Health, summary="Liveness: the process answers.")
async def healthz() -> Health:
    return Health()


def _readiness(request: Request) -> Readiness:
    state = request.app.state
    settings = state.settings
    holder = state.holder
    checks: dict[str, Check] = {}
    if holder.ready:
        checks["models"] = Check(ok=True, detail=", ".join(m.name for m in holder.engine.models()) or None)
    elif settings.mode == "celery" and settings.sync_on_workers:
        checks["models"] = Check(ok=False, detail="no worker has announced its models yet")
    elif holder.loading or holder.error is None:
        checks["models"] = Check(ok=False, detail="loading and warming up")
    else:
        checks["models"] = Check(ok=False, detail=holder.error)
    problem = state.dispatcher.problem() if getattr(state, "dispatcher", None) else "not started"
    checks["broker" if settings.mode == "celery" else "executor"] = Check(ok=problem is None, detail=problem)
    broker_side = getattr(state, "broker_side", None)
    if broker_side is not None:  # a live worker (heartbeat, cached one period) consumes each queue
        wproblem = broker_side.problem()
        checks["workers"] = Check(ok=wproblem is None, detail=wproblem or broker_side.detail())
    try:
        state.store.ping()
        checks["job_store"] = Check(ok=True)
    except Exception as exc:  # noqa: BLE001
        checks["job_store"] = Check(ok=False, detail=f"unreachable: {exc}")
    roots = server_roots(request)  # /readyz is public: no paths, addresses or broker host:port
    checks = {k: Check(ok=c.ok, detail=redact(c.detail, roots) if c.detail else c.detail) for k, c in checks.items()}
    ready = all(c.ok for c in checks.values())
    err = None
    if not ready:
        failing = "; ".join(f"{k}: {c.detail}" for k, c in checks.items() if not c.ok)
        err = ErrorDetail(code="not_ready", message=failing)
    return Readiness(ready=ready, mode=settings.mode, checks=checks, error=err)


@router.get("/readyz", response_model=Readiness, summary="Readiness: models loaded and warmed, broker reachable.",
            responses={503: {"model": Readiness, "description": "Not ready (see checks)."}})
async def readyz(request: Request) -> Response:
    r = await run_in_threadpool(_readiness, request)
    return JSONResponse(r.model_dump(mode="json"), status_code=200 if r.ready else 503,
                        headers=None if r.ready else {"Retry-After": "5"})


@router.get("/metrics", summary="Prometheus metrics.", response_class=Response,
            responses={200: {"content": {CONTENT_TYPE_LATEST: {}}, "description": "Prometheus text format."}})
async def metrics(request: Request, settings: SettingsDep) -> Response:
    if not settings.metrics_public:
        authenticate(request.headers.get(api_key_header.model.name), settings.api_keys, settings.admin_api_keys)
    state = request.app.state
    state.metrics.ready.set(1.0 if state.holder.ready else 0.0)
    body = await run_in_threadpool(generate_latest, state.metrics.registry)
    return Response(body, media_type=CONTENT_TYPE_LATEST)
