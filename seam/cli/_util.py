"""Helpers shared by CLI commands: errors and progress bars."""
from __future__ import annotations

from typing import NoReturn

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from seam.common import options

console = Console(stderr=True)


def fail(message: str, code: int = 2) -> NoReturn:
    """Print a one-line error and exit; CLI commands never show tracebacks for user errors."""
    console.print(f"[bold red]error:[/] {message}")
    raise typer.Exit(code)


def progress_bar() -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
        TextColumn("{task.fields[status]}"), TimeElapsedColumn(), TimeRemainingColumn(),
        console=console, transient=False,
    )


def parse_floats(text: str) -> tuple[float, ...]:
    """seam.common.options.parse_floats, its error a usage error of the option."""
    try:
        return options.parse_floats(text)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
