"""`seam serve`: the HTTP API (embedded job executor unless a broker is configured)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from seam.cli._app import app
from seam.cli._util import fail


def apply_overrides(**values: object) -> None:
    """CLI options win over SEAM_* variables; they are exported so that every process
    reading the settings (uvicorn, Celery pool processes) sees the same values."""
    for key, value in values.items():
        if value is not None:
            os.environ[f"SEAM_{key.upper()}"] = str(value)


def load_settings():
    from pydantic import ValidationError

    from seam.service.core.config import Settings, get_settings

    get_settings.cache_clear()
    try:
        return Settings()
    except ValidationError as exc:
        msgs = "; ".join(f"SEAM_{'.'.join(str(p) for p in e['loc']).upper()}: {e['msg']}" for e in exc.errors())
        fail(f"invalid settings: {msgs or exc}")


@app.command("serve")
def serve(
    host: Annotated[str, typer.Option(help="Interface to listen on (0.0.0.0 to expose it).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
    models_dir: Annotated[Path | None, typer.Option(help="Model repository [SEAM_MODELS_DIR, default "
                                                         "models/].")] = None,
    data_dir: Annotated[Path | None, typer.Option(
        help="Job inputs/outputs [SEAM_DATA_DIR, default ~/.cache/seam].")] = None,
    workers: Annotated[int | None, typer.Option(
        help="Embedded mode: threads processing job chunks [SEAM_EMBEDDED_WORKERS, default 1].")] = None,
    broker_url: Annotated[str | None, typer.Option(
        help="redis:// URL: hand jobs to `seam worker` processes instead [SEAM_BROKER_URL].")] = None,
    engine: Annotated[str | None, typer.Option(help="onnx, or fake (test/demo engine, no model) "
                                                    "[SEAM_ENGINE].")] = None,
    threads: Annotated[int | None, typer.Option(help="onnxruntime threads [SEAM_THREADS].")] = None,
    log_level: Annotated[str, typer.Option(help="uvicorn log level.")] = "info",
) -> None:
    """Serve the HTTP API: /segment, /cam, /cam/refined, /jobs, /models, /healthz, /readyz, /metrics.

    Without a broker, batch jobs run in this process (threads, bounded queue) with the same
    task code the Celery workers run; with SEAM_BROKER_URL they go to `seam worker`."""
    apply_overrides(models_dir=models_dir, data_dir=data_dir, embedded_workers=workers, broker_url=broker_url,
                    engine=engine, threads=threads)
    settings = load_settings()
    import logging

    import uvicorn

    from seam.service.main import create_app

    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    typer.echo(f"seam serve: {settings.mode} mode, models {settings.models_dir}, data {settings.data_dir}, "
               f"http://{host}:{port}/docs", err=True)
    uvicorn.run(create_app(settings), host=host, port=port, log_level=log_level, timeout_graceful_shutdown=10,
                access_log=False)
