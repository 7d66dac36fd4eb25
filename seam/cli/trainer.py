"""`seam trainer`: the Celery worker that runs trainings (`seam.train` on `<prefix>-training`),
one at a time; or, with `--once WORKDIR`, one training in this process (what the embedded
service's child process runs)."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from seam.cli._app import app
from seam.cli._util import fail
from seam.cli.serve import apply_overrides


@app.command("trainer")
def trainer(
    broker_url: Annotated[str | None, typer.Option(help="redis:// URL [SEAM_BROKER_URL] (required without "
                                                        "--once).")] = None,
    models_dir: Annotated[Path | None, typer.Option(help="Model repository the trainings publish into "
                                                         "[SEAM_MODELS_DIR].")] = None,
    data_dir: Annotated[Path | None, typer.Option(help="The data directory shared with the API "
                                                       "[SEAM_DATA_DIR].")] = None,
    key_prefix: Annotated[str | None, typer.Option(help="Queue prefix: <prefix>-training [SEAM_KEY_PREFIX].")] = None,
    hostname: Annotated[str | None, typer.Option(help="Celery node name (default trainer@<host>).")] = None,
    loglevel: Annotated[str, typer.Option(help="Celery log level.")] = "info",
    once: Annotated[Path | None, typer.Option(help="Run the training in this directory (its spec.json) and "
                                                   "exit, without Celery.")] = None,
) -> None:
    """Train what the API queues: each training's progress goes to its status.json and log.txt
    under the shared data directory; a finished one is exported and published as a new version.
    A trainer killed under a training gets it back (acks_late) and resumes from the last epoch
    checkpoint."""
    import os

    apply_overrides(broker_url=broker_url, models_dir=models_dir, data_dir=data_dir, key_prefix=key_prefix)
    if once is not None:
        from seam.training.worker.__main__ import main

        raise typer.Exit(main([str(once)]))
    if not os.environ.get("SEAM_BROKER_URL"):
        fail("seam trainer needs a broker: set SEAM_BROKER_URL=redis://host:6379/0 or pass --broker-url "
             "(or --once WORKDIR)")
    from seam.modelrepo.trainings import training_queue
    from seam.training.worker.celery_app import celery_app

    queue = training_queue(os.environ.get("SEAM_KEY_PREFIX", "seam"))
    # prefork -c 1: the training runs in a pool process, so a killed one is seen by the main process
    # (WorkerLostError) and its task requeued at once (reject_on_worker_lost)
    argv = ["worker", "--pool=prefork", "--concurrency=1", f"--queues={queue}", f"--loglevel={loglevel}",
            "--without-gossip", "--without-mingle", f"--hostname={hostname or 'trainer@%h'}"]
    celery_app.worker_main(argv)
