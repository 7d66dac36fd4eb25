"""The `seam` command line (`seam`, `python -m seam.cli`). Each command lives in
`seam/cli/<name>.py` and registers itself on the app in seam/cli/_app.py when imported;
this module imports them all. Commands keep heavy imports (torch, onnxruntime) inside their
function, and the ones whose options come from a training config are built on first use, so
`seam --help` stays fast. The CLI is the top floor: the only package that may import both
training and the service."""
from __future__ import annotations

from seam.cli import (  # noqa: F401 - imported to register their commands
    cam,
    class_prediction,
    cvat,
    evaluate,
    export,
    models,
    pipeline,
    rw,
    segment,
    serve,
    synth,
    train,
    train_affinity,
    train_deeplab,
    trainer,
    worker,
)
from seam.cli._app import app


def main() -> None:  # pragma: no cover - console entry
    app()
