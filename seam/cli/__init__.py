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
    # help texts are plain text: with rich markup, "{id: [classes]}" would lose "[classes]"
    rich_markup_mode=None,
)
train_app = typer.Typer(help="Train SEAM, AffinityNet or DeepLab.", no_args_is_help=True, rich_markup_mode=None)
app.add_typer(train_app, name="train")

# command name -> "module:function" under seam.cli; a bare name is both
COMMANDS: dict[typer.Typer, dict[str, str]] = {
    app: {"synth": "synth", "eval": "evaluate", "cam": "cam", "serve": "serve", "worker": "worker", "rw": "rw",
          "segment": "segment", "pipeline": "pipeline", "export": "export"},
    train_app: {"seam": "train:train_seam", "affinity": "train_affinity", "deeplab": "train_deeplab"},
}

for _target, _commands in COMMANDS.items():
    for _name, _where in _commands.items():
        _module, _, _func = _where.partition(":")
        _target.command(_name)(getattr(importlib.import_module(f"seam.cli.{_module}"), _func or _module))


def main() -> None:  # pragma: no cover - console entry
    app()
