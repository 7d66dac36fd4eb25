"""The FastAPI app factory.

    uvicorn --factory seam.service.main:create_app          (what `seam serve` runs)

`create_app(settings=None, engine=None, store=None, dispatcher=None)`: tests inject a
fake engine and settings; production reads `SEAM_*` and loads the engine in the
lifespan (in a thread, so /healthz answers and /readyz says 503 until it is warm).
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

from fastapi import Depends, FastAPI
from fastapi.middleware.cors import CORSMiddleware
from pydantic import BaseModel
from seam.service import integrations
from seam.service.api.deps import require_api_key
from seam.service.api.routes import health, inference, jobs, models, trainings, web
from seam.service.core.config import Settings, get_settings
from seam.service.core.engine_holder import EngineHolder, build_engine
from seam.service.core.errors import error_response, install_error_handlers
from seam.service.core.limits import BodyLimitMiddleware, InflightLimiter
from seam.service.core.metrics import Metrics, MetricsMiddleware
from seam.service.core.registry import ModelRegistry, make_registry
from seam.service.core.security import ApiKeyMiddleware
from seam.service.engine.base import InferenceEngine
from seam.service.jobs import lifecycle
from seam.service.jobs.dispatch import CeleryDispatcher, Dispatcher, EmbeddedDispatcher
from seam.service.jobs.execution import build_context, engine_getter, make_store
from seam.service.jobs.processing import TRANSIENT
from seam.service.jobs.stores.base import JobStore
from seam.service.model_sync import start_model_sync
from seam.service.object_storage import make_storage
from seam.service.realtime.wiring import BrokerSide
from seam.service.storage import Storage
from seam.service.trainings.runner import CeleryTrainers, EmbeddedTrainers
from seam.service.trainings.store import TrainingStore
from starlette.concurrency import run_in_threadpool

log = logging.getLogger("seam.service")

SWEEP_INTERVAL_S = 60
API_DESCRIPTION = """Weakly supervised semantic segmentation (SEAM CAMs, AffinityNet random walk, DeepLab) over
ONNX models. Errors are always `{"error": {"code": ..., "message": ...}}`. When the server has API keys, send
`X-API-Key`. Busy servers answer 429/503 with `Retry-After`."""


def _make_dispatcher(settings: Settings, store: JobStore, storage: Storage, holder: EngineHolder) -> Dispatcher:
    if settings.mode == "celery":
        return CeleryDispatcher(settings)
    ctx = build_context(settings, engine_getter(holder), store=store, storage=storage)
    return EmbeddedDispatcher(ctx, workers=settings.embedded_workers)


def _make_trainers(settings: Settings, store: TrainingStore,
                   dispatcher: Dispatcher) -> CeleryTrainers | EmbeddedTrainers:
    if settings.mode == "celery":  # one Celery app (and connection pool) sends jobs and trainings
        return CeleryTrainers(settings, store, getattr(dispatcher, "celery", None))
    return EmbeddedTrainers(settings, store)


def create_app(settings: Settings | None = None, engine: InferenceEngine | None = None,
               store: JobStore | None = None, dispatcher: Dispatcher | None = None) -> FastAPI:
    settings = settings or get_settings()
    metrics = Metrics()
    # the models of this process: an engine per (name, version), hot reloaded (core/registry.py);
    # with an injected engine or on the worker path, names and versions only
    holder = (ModelRegistry(None) if engine is not None
              else make_registry(settings, engines=not settings.sync_on_workers))
    storage = make_storage(settings)  # the data directory, or an object store (SEAM_STORAGE_URL)
    lifespan = _lifespan(settings, holder, storage, metrics, engine, store, dispatcher)
    app = FastAPI(title="seam-wsss", version="0.1.0", description=API_DESCRIPTION, lifespan=lifespan)
    app.state.settings = settings
    app.state.metrics = metrics
    app.state.holder = holder
    app.state.storage = storage
    app.state.trainings = TrainingStore(settings.data_dir)
    metrics.add_jobs_collector(lambda: _job_stats(app))
    _install_error_handlers(app)
    _install_routes(app)
    _install_openapi_models(app, (*jobs.OPENAPI_MODELS, *trainings.OPENAPI_MODELS), jobs.document_outputs)
    _install_middleware(app, settings, metrics)
    return app


def _lifespan(settings: Settings, holder: ModelRegistry, storage: Storage, metrics: Metrics,
              engine: InferenceEngine | None, store: JobStore | None, dispatcher: Dispatcher | None):
    """Start-up and shut-down: the engine (given, or loaded in the background), the job store and
    dispatcher (given or built from the settings), resumed jobs, and the periodic sweeps."""

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await run_in_threadpool(storage.ensure)
        # SEAM_MODELS_URL: the repository copied into SEAM_MODELS_DIR before the models load
        app.state.model_sync = model_sync = await run_in_threadpool(start_model_sync, settings)
        app.state.limiter = limiter = InflightLimiter(settings.max_inflight, settings.max_waiting,
                                                      settings.wait_timeout_s)
        metrics.inflight.set_function(lambda: limiter.inflight)
        metrics.waiting.set_function(lambda: limiter.waiting)
        if engine is not None:
            await run_in_threadpool(holder.set, engine, settings.warmup)
        elif settings.engine == "fake" and not settings.sync_on_workers:
            holder.load_in_background(lambda: build_engine(settings), settings.warmup)
        elif holder.repo is not None:  # load the promoted versions, then watch for new ones (hot reload)
            holder.start_watching(settings.models_poll_s)
        app.state.store = the_store = store or make_store(settings)
        app.state.dispatcher = the_dispatcher = dispatcher or _make_dispatcher(settings, the_store, storage, holder)
        the_dispatcher.start()
        app.state.trainers = trainers = _make_trainers(settings, app.state.trainings, the_dispatcher)
        trainers.start()
        app.state.broker_side = broker_side = None
        if settings.mode == "celery":  # worker liveness per queue; sync requests to the workers
            app.state.broker_side = broker_side = BrokerSide(settings, holder, getattr(the_dispatcher, "celery", None))
            await broker_side.start()
        if settings.mode == "embedded":  # jobs that were running when the last process died
            await run_in_threadpool(lifecycle.resume_embedded, the_store, storage, the_dispatcher.submit,
                                    settings.chunk_size)
        await run_in_threadpool(trainers.resume_unfinished)  # embedded: trainings the last process left
        sweeper = asyncio.create_task(_sweep_forever(the_store, storage, settings))
        reaper = (asyncio.create_task(_requeue_forever(the_dispatcher, settings))
                  if isinstance(the_dispatcher, CeleryDispatcher) else None)
        log.info("seam service up (%s mode, data in %s)", settings.mode, settings.data_dir)
        try:
            yield
        finally:
            sweeper.cancel()
            if reaper is not None:
                reaper.cancel()
            holder.stop_watching()
            if model_sync is not None:
                model_sync.stop()
            if broker_side is not None:
                await broker_side.stop()
            await run_in_threadpool(trainers.stop)  # before the dispatcher closes the Celery app they share
            await run_in_threadpool(the_dispatcher.stop)
            if store is None:
                await run_in_threadpool(the_store.close)

    return lifespan


def _install_error_handlers(app: FastAPI) -> None:
    install_error_handlers(app)

    async def _backend_down(request, exc: Exception):
        log.warning("job store/broker unavailable: %s", exc)
        return error_response(503, "unavailable", f"job store or broker unavailable: {exc}", {"Retry-After": "10"})

    for exc_type in TRANSIENT:
        app.add_exception_handler(exc_type, _backend_down)


def _install_routes(app: FastAPI) -> None:
    protected = [Depends(require_api_key)]
    app.include_router(health.router)
    app.include_router(models.router, dependencies=protected)
    app.include_router(inference.router, dependencies=protected)
    app.include_router(jobs.router, dependencies=protected)
    app.include_router(jobs.public_router)  # GET /outputs
    app.include_router(trainings.router, dependencies=protected)
    app.include_router(web.router)  # the web page (/ and /static/...); public: it asks for the key itself


def _install_openapi_models(app: FastAPI, models: Sequence[type[BaseModel]],
                            finish: Callable[[dict[str, Any]], None]) -> None:
    """Put `models` (and the models they use) into the schema's components, so that hand-written
    request bodies can `$ref` them (an unresolvable $ref made Schemathesis skip the JSON body of
    POST /jobs); then `finish` completes the texts built from tables."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        schema = build()  # FastAPI's own, cached
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        for model in models:
            js = model.model_json_schema(ref_template="#/components/schemas/{model}")
            for name, sub in js.pop("$defs", {}).items():
                components.setdefault(name, sub)
            components.setdefault(model.__name__, js)
        finish(schema)
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def _install_middleware(app: FastAPI, settings: Settings, metrics: Metrics) -> None:
    """Starlette runs the middleware added last first: metrics, CORS, the labelling tools' Basic-auth
    translation (with their routes), API key, body limit."""

    def limit_for(method: str, path: str) -> int | None:
        if method == "POST" and path.rstrip("/") == "/jobs":
            return settings.max_job_upload_bytes
        if method == "POST" and path.rstrip("/") == "/trainings":
            return int(settings.training_max_upload_mb * 1024 * 1024)
        return settings.max_upload_bytes

    app.add_middleware(BodyLimitMiddleware, limit_for=limit_for, idle_timeout_s=settings.body_timeout_s)
    # Added after (so it runs before) the body limit: the key is checked before Content-Length and the body.
    app.add_middleware(ApiKeyMiddleware, keys=settings.api_keys, admin_keys=settings.admin_api_keys)
    integrations.install(app)  # /labelstudio (Basic auth read as an API key) and /cvat routes
    if settings.cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=settings.cors_origins, allow_methods=["GET", "POST", "DELETE"],
                           allow_headers=["X-API-Key", "Content-Type"],
                           expose_headers=["X-Seam-Classes", "X-Seam-Method", "X-Seam-Model", "Retry-After",
                                           "Location"])
    app.add_middleware(MetricsMiddleware, metrics=metrics)


def _job_stats(app: FastAPI) -> dict:
    store = getattr(app.state, "store", None)
    dispatcher = getattr(app.state, "dispatcher", None)
    if store is None or dispatcher is None:
        return {}
    s = store.stats()
    s["queued_chunks"] = dispatcher.queued_chunks()
    return s


async def _requeue_forever(dispatcher: CeleryDispatcher, settings: Settings) -> None:
    """Celery mode: chunks held by worker hosts whose heartbeat stopped go back to the queue
    (seam.service.worker.redelivery) instead of waiting for the visibility timeout."""
    from seam.service.worker.redelivery import requeue_orphans

    while True:
        await asyncio.sleep(settings.worker_heartbeat_s)
        try:
            await run_in_threadpool(requeue_orphans, dispatcher.celery, dispatcher.redis, settings.key_prefix,
                                    settings.worker_heartbeat_s)
        except Exception as exc:  # noqa: BLE001 - broker down: the visibility timeout still applies
            log.warning("re-queueing chunks of dead workers failed: %s", exc)


async def _sweep_forever(store: JobStore, storage: Storage, settings: Settings) -> None:
    """Delete job folders past their TTL (their state in the store has expired too) and
    the inputs of jobs that have ended."""
    while True:
        try:
            removed, freed = await run_in_threadpool(lifecycle.sweep, store, storage, settings)
            if removed or freed:
                log.info("swept %d expired jobs, freed the inputs of %d ended jobs", len(removed), len(freed))
        except Exception:  # noqa: BLE001
            log.exception("sweep failed")
        await asyncio.sleep(SWEEP_INTERVAL_S)
