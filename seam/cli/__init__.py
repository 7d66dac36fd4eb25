"""The `seam` command line (`seam`, `python -m seam.cli`). Each command lives in
`seam/cli/<name>.py` and keeps heavy imports (torch, onnxruntime) inside its function so
`seam --help` stays fast. The CLI is the top floor: the only package that may import both
training and the service."""
from __future__ import annotations

import importlib

import typer

app = typer.Typer(
    name="seam",
    help="Weakly supervised semantic segmentation: SEAM CAMs, AffinityNet random walk, DeepLab; train, export, serve.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)
train_app = typer.Typer(help="Train SEAM, AffinityNet or DeepLab.", no_args_is_help=True)
app.add_typer(train_app, name="train")

# (typer app, command name, module under seam.cli, function name)
COMMANDS: list[tuple[typer.Typer, str, str, str]] = [
    (app, "synth", "synth", "synth"),
    (app, "eval", "evaluate", "evaluate"),
    (app, "cam", "cam", "cam"),
    (app, "serve", "serve", "serve"),
    (app, "worker", "worker", "worker"),
    (train_app, "seam", "train", "train_seam"),
    (train_app, "affinity", "train_affinity", "train_affinity"),
    (train_app, "deeplab", "train_deeplab", "train_deeplab"),
    (app, "rw", "rw", "rw"),
    (app, "segment", "segment", "segment"),
    (app, "pipeline", "pipeline", "pipeline"),
    (app, "export", "export", "export"),
]

for _target, _name, _module, _func in COMMANDS:
    _target.command(_name)(getattr(importlib.import_module(f"seam.cli.{_module}"), _func))


def main() -> None:  # pragma: no cover - console entry
    app()
