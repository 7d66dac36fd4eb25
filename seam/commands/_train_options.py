"""Options shared by the `seam train` commands (seam, affinity, deeplab), as typer
`Annotated` types: a command declares `device: Device = None` and typer reads the
option from the alias."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

Epochs = Annotated[int, typer.Option(help="Epochs.")]
Momentum = Annotated[float, typer.Option(help="SGD momentum.")]
AuthorsMomentum = Annotated[bool, typer.Option("--authors-momentum", help="Momentum 5e-4: what the release's optimiser actually used.")]
NoJitter = Annotated[bool, typer.Option("--no-jitter", help="No colour jitter.")]
Out = Annotated[Path, typer.Option(help="Run directory.")]
Resume = Annotated[bool, typer.Option("--resume", help="Continue from RUN_DIR/checkpoint.pth exactly.")]
Device = Annotated[str | None, typer.Option(help="torch device (default: cuda if available).")]
Workers = Annotated[int | None, typer.Option(help="Data loader workers (default 0 on CPU, up to 8 on CUDA).")]
MaxMinutes = Annotated[float | None, typer.Option(help="Stop after this many minutes (checkpoint + weights saved).")]
Amp = Annotated[bool | None, typer.Option("--amp/--no-amp", help="Mixed precision (default: on with CUDA).")]
Deterministic = Annotated[bool, typer.Option("--deterministic/--no-deterministic", help="Deterministic algorithms where torch has them.")]
LogEvery = Annotated[int, typer.Option(help="Iterations per log.csv row.")]
StopAfter = Annotated[int | None, typer.Option(hidden=True, help="Stop after N iterations (preemption drill).")]


def path_str(p: Path | None) -> str | None:
    return None if p is None else str(p)
