"""Command-line metadata on config dataclass fields: a field declared with `setting(...)` carries
its help text and the shape of its option, so the config is the one source of names, defaults and
help that `seam/cli` builds its options from (seam/cli/_options.py). A field without it is for
library callers only. Plain data: nothing here imports a command-line library."""
from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import MISSING, dataclass
from typing import Any

CLI_KEY = "seam.cli"


@dataclass(frozen=True)
class Cli:
    """How one config field appears on the command line.

    flag: the option's declaration when it is not `--field-name` (e.g. "--iterations"; a bool
      pair "--x/--no-x"); None: no value option, only `off`.
    aliases: further names of the same option.
    off: a flag that sets the field to False (e.g. "--no-er"); with `recipe` its absence stays
      None, so an off switch is an override the recipe report shows. `help` is the off flag's
      when there is no value option, else `off_help` is.
    recipe: absent from the command line = None = the recipe's value (the dataclass default is
      the recipe's value for library callers).
    path: the command line takes a path (the field stores it as str).
    parse: text -> field value (comma lists); raises ValueError on bad text.
    required / hidden: the command line must give it / it is left out of --help.
    min / max: bounds; `clamp` moves a value outside them to the bound instead of refusing it.
    choices: the values the option takes, asked when the command is built (a table that can
      grow, e.g. the data set kinds, lists what it holds then)."""

    help: str
    flag: str | None = ""
    aliases: tuple[str, ...] = ()
    off: str | None = None
    off_help: str = ""
    recipe: bool = False
    path: bool = False
    parse: Callable[[str], Any] | None = None
    required: bool = False
    hidden: bool = False
    min: float | None = None
    max: float | None = None
    clamp: bool = False
    choices: Callable[[], Sequence[str]] | None = None


def setting(default: Any = MISSING, *, help: str, default_factory: Any = MISSING, **cli: Any) -> Any:
    """A dataclass field with command-line metadata (`Cli`'s keywords)."""
    return dataclasses.field(default=default, default_factory=default_factory,
                             metadata={CLI_KEY: Cli(help=help, **cli)})


def cli_of(f: dataclasses.Field) -> Cli | None:
    """The field's `Cli` metadata; None for a field the command line does not show."""
    return f.metadata.get(CLI_KEY)


def parse_floats(text: str) -> tuple[float, ...]:
    """"0.5,1.0" -> (0.5, 1.0)."""
    try:
        vals = tuple(float(t) for t in text.split(",") if t.strip())
    except ValueError:
        raise ValueError(f"expected comma-separated numbers, got {text!r}") from None
    if not vals:
        raise ValueError("expected at least one number")
    return vals


def parse_n_floats(n: int, what: str) -> Callable[[str], tuple[float, ...]]:
    """A parser of exactly `n` comma-separated numbers; `what` names them in the error."""
    def parse(text: str) -> tuple[float, ...]:
        vals = parse_floats(text)
        if len(vals) != n:
            raise ValueError(f"takes {what}, got {text!r}")
        return vals

    return parse


def parse_int_pair(text: str) -> tuple[int, int]:
    """"448,768" -> (448, 768)."""
    lo, hi = parse_n_floats(2, "MIN,MAX")(text)
    return int(lo), int(hi)


def show_value(value: Any) -> str:
    """How a default reads on the command line: tuples as the comma list `parse` takes."""
    if isinstance(value, tuple):
        return ",".join(str(v) for v in value)
    return str(value)
