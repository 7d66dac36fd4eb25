"""`seam worker`: a Celery worker serving synchronous requests and job chunks (one process per GPU)."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from seam.cli._app import app
from seam.cli._util import fail
from seam.cli.serve import apply_overrides, load_settings


@app.command("worker")
def worker(
    broker_url: Annotated[str | None, typer.Option(help="redis:// URL [SEAM_BROKER_URL] (required).")] = None,
    models_dir: Annotated[Path | None, typer.Option(help="Model repository [SEAM_MODELS_DIR].")] = None,
    data_dir: Annotated[Path | None, typer.Option(help="Shared job data directory [SEAM_DATA_DIR].")] = None,
    concurrency: Annotated[int, typer.Option("-c", "--concurrency", help="Pool processes; 1 per GPU.")] = 1,
    pool: Annotated[str, typer.Option(help="Celery pool: prefork (time limits work) or solo.")] = "prefork",
    engine: Annotated[str | None, typer.Option(help="onnx, or fake (test/demo) [SEAM_ENGINE].")] = None,
    providers: Annotated[str | None, typer.Option(help="onnxruntime providers: auto, cpu, cuda "
                                                       "[SEAM_PROVIDERS].")] = None,
    threads: Annotated[int | None, typer.Option(help="onnxruntime threads [SEAM_THREADS].")] = None,
    hostname: Annotated[str | None, typer.Option(help="Celery node name (default seam@<host>).")] = None,
    max_tasks_per_child: Annotated[int | None, typer.Option(help="Recycle a pool process after N chunks.")] = None,
    loglevel: Annotated[str, typer.Option(help="Celery log level.")] = "info",
    queues: Annotated[str, typer.Option(help=(
        "What to serve, in priority order: realtime (/segment and /cam requests), chunks (batch jobs), "
        "comma separated."))] = "realtime,chunks",
) -> None:
    """Start a Celery worker for /segment, /cam and job chunks (`--pool prefork -c 1`: the engine
    is created in the pool process after the fork, never inherited across it)."""
    apply_overrides(broker_url=broker_url, models_dir=models_dir, data_dir=data_dir, engine=engine,
                    providers=providers, threads=threads)
    settings = load_settings()
    if settings.mode != "celery":
        fail("seam worker needs a broker: set SEAM_BROKER_URL=redis://host:6379/0 or pass --broker-url")
    from seam.service.worker.celery_app import celery_app

    roles = {"realtime": settings.realtime_queue_name, "chunks": settings.queue_name}
    wanted = [q.strip() for q in queues.split(",") if q.strip()]
    unknown = [q for q in wanted if q not in roles]
    if unknown or not wanted:
        fail(f"--queues: expected a comma-separated subset of realtime,chunks; got {queues!r}")
    # Listed first = taken first (the broker polls the queues in this order).
    qnames = ",".join(roles[q] for q in dict.fromkeys(wanted))
    argv = ["worker", f"--pool={pool}", f"--concurrency={concurrency}", f"--queues={qnames}",
            f"--loglevel={loglevel}", "--without-gossip", "--without-mingle"]
    if hostname:
        argv.append(f"--hostname={hostname}")
    if max_tasks_per_child:
        argv.append(f"--max-tasks-per-child={max_tasks_per_child}")
    celery_app.worker_main(argv)
