"""The `seam` typer apps and how commands join them. A command module registers its command
when it is imported (`@app.command(...)`, or `@config_command(...)` for one whose options come
from a config dataclass); seam/cli/__init__.py imports every command module.

The configs live next to their trainers, whose modules import torch (about a second), so a
config command is built on first use: the group lists it by name and docstring, and only
running it or asking for its --help imports the config. `seam --help` stays fast."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

import click
import typer
from typer.core import TyperGroup

from seam.cli._options import with_config

# help texts are plain text: with rich markup, "{id: [classes]}" would lose "[classes]"
SETTINGS: dict[str, Any] = {"rich_markup_mode": None, "pretty_exceptions_show_locals": False}


class DeferredCommand(click.Command):
    """A command listed by its name and help, built by `build` when it runs (or shows --help)."""

    def __init__(self, name: str, help_text: str, build: Callable[[], click.Command]) -> None:
        super().__init__(name, help=help_text)
        self._build = build
        self._real: click.Command | None = None

    @property
    def real(self) -> click.Command:
        if self._real is None:
            self._real = self._build()
        return self._real

    def make_context(self, info_name: str | None, args: list[str], parent: click.Context | None = None,
                     **extra: Any) -> click.Context:
        # the context's command is the real one: parsing, --help and invoke all happen there
        return self.real.make_context(info_name, args, parent=parent, **extra)


class SeamGroup(TyperGroup):
    """A typer group that also holds the deferred commands registered on its app."""

    deferred: ClassVar[dict[str, DeferredCommand]] = {}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for name, cmd in self.deferred.items():
            self.commands.setdefault(name, cmd)


def new_app(**kwargs: Any) -> typer.Typer:
    """A typer app whose group (a fresh SeamGroup subclass: its own deferred table) takes
    config commands."""
    group = type("SeamGroup", (SeamGroup,), {"deferred": {}})
    return typer.Typer(cls=group, no_args_is_help=True, **SETTINGS, **kwargs)


def config_command(target: typer.Typer, name: str, config: Callable[[], type]) -> Callable[[Callable], Callable]:
    """Register `fn(given, **extras)` as command `name` of `target`, its options built from the
    dataclass `config()` returns (imported then, not now) plus `fn`'s own extra parameters."""
    def register(fn: Callable[..., Any]) -> Callable[..., Any]:
        def build() -> click.Command:
            single = typer.Typer(add_completion=False, **SETTINGS)
            single.command(name)(with_config(fn, config()))
            return typer.main.get_command(single)

        target.info.cls.deferred[name] = DeferredCommand(name, fn.__doc__ or "", build)  # type: ignore[union-attr]
        return fn

    return register


app = new_app(name="seam", help="Weakly supervised semantic segmentation: SEAM CAMs, AffinityNet random walk, "
                                "DeepLab; train, export, serve.")
train_app = new_app(help="Train SEAM, AffinityNet or DeepLab.")
app.add_typer(train_app, name="train")
