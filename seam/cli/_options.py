"""Command-line options built from a config dataclass: every field declared with
`seam.common.options.setting` becomes a typer option with the field's help, name and default;
the command receives the values given as a dict of field values (`collect`), ready for
`Config.from_recipe(recipe, **given)` or `Config(**given)`.

A field with `Cli.recipe` has no default on the command line: absent is None, which
`from_recipe` reads as "the recipe's value", so a flag given wins and the recipe report lists
it as an override, while nothing the user left out does. A field whose default is a dataclass
(`PipelineConfig.rw`) contributes its own fields' options and is rebuilt from them."""
from __future__ import annotations

import dataclasses
import inspect
import typing
from collections.abc import Callable, Iterator
from dataclasses import MISSING, dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import typer

from seam.common.options import Cli, cli_of, show_value

OFF = "__off"  # suffix of the parameter holding a field's off switch
NESTED = "__"  # joins a nested config's field to its parent field in parameter names


@dataclass(frozen=True)
class Spec:
    """One config field on the command line: `param` is its signature name (`rw__alpha` for a
    field of the nested config in `PipelineConfig.rw`), `name` the field's own."""

    param: str
    name: str
    type: Any
    default: Any
    cli: Cli


def specs_of(config: type, prefix: str = "") -> Iterator[Spec]:
    """The fields of `config` that have command-line metadata, in declaration order."""
    hints = typing.get_type_hints(config)
    for f in dataclasses.fields(config):
        factory = f.default_factory
        if cli_of(f) is None and isinstance(factory, type) and dataclasses.is_dataclass(factory):
            yield from specs_of(factory, f"{prefix}{f.name}{NESTED}")
            continue
        cli = cli_of(f)
        if cli is not None:
            default = f.default if factory is MISSING else factory()
            yield Spec(f"{prefix}{f.name}", f.name, hints[f.name], default, cli)


def _base_type(spec: Spec) -> type:
    """The type the command line parses: str for text a `parse` reads, Path for paths, else the
    field's type without None."""
    if spec.cli.parse is not None:
        return str
    if spec.cli.path:
        return Path
    args = [a for a in typing.get_args(spec.type) if a is not type(None)]
    return args[0] if args else spec.type


def _flag(spec: Spec, base: type) -> list[str]:
    """The option's declarations: the metadata's, else --field-name (a bool: a flag, a pair when
    the default is True or the recipe decides)."""
    name = "--" + spec.name.replace("_", "-")
    flag = spec.cli.flag or name
    if base is bool and not spec.cli.flag and (spec.cli.recipe or spec.default is True):
        flag = f"{name}/--no-{spec.name.replace('_', '-')}"
    return [flag, *spec.cli.aliases]


def _cli_default(spec: Spec) -> Any:
    if spec.cli.required or spec.default is MISSING:
        return inspect.Parameter.empty
    if spec.cli.recipe or spec.default is None:
        return None
    return show_value(spec.default) if spec.cli.parse is not None else spec.default


def parameters(specs: list[Spec]) -> list[inspect.Parameter]:
    """typer-annotated keyword parameters, required ones first (so --help starts with them)."""
    out = []
    for spec in specs:
        c, base = spec.cli, _base_type(spec)
        if c.choices is not None:  # typer lists and checks a Literal's values
            base = Literal[tuple(c.choices())]  # type: ignore[assignment]
        default = _cli_default(spec)
        if c.flag is not None:
            kind = base | None if default is None else base
            bounds = {k: getattr(c, k) for k in ("min", "max") if getattr(c, k) is not None}
            option = typer.Option(*_flag(spec, base), help=c.help, hidden=c.hidden, clamp=c.clamp, **bounds)
            out.append(inspect.Parameter(spec.param, inspect.Parameter.KEYWORD_ONLY, default=default,
                                         annotation=Annotated[kind, option]))
        if c.off is not None:
            option = typer.Option(c.off, help=c.help if c.flag is None else c.off_help, hidden=c.hidden)
            out.append(inspect.Parameter(spec.param + OFF, inspect.Parameter.KEYWORD_ONLY, default=False,
                                         annotation=Annotated[bool, option]))
    return sorted(out, key=lambda p: p.default is not inspect.Parameter.empty)


def _value(spec: Spec, values: dict[str, Any]) -> Any:
    """The field value of one spec from the parsed options: the off switch wins, text is parsed."""
    if values.get(spec.param + OFF):
        return False
    value = values.get(spec.param, None if spec.cli.recipe else spec.default)
    if value is None:
        return None
    if spec.cli.parse is not None and isinstance(value, str):
        try:
            return spec.cli.parse(value)
        except ValueError as exc:
            raise typer.BadParameter(str(exc), param_hint=_flag(spec, str)[0]) from None
    return str(value) if spec.cli.path else value


def collect(config: type, specs: list[Spec], values: dict[str, Any]) -> dict[str, Any]:
    """{field: value} of `config` from the command's parsed options; a nested config is built."""
    given: dict[str, Any] = {}
    nested: dict[str, dict[str, Any]] = {}
    for spec in specs:
        parent, _, child = spec.param.rpartition(NESTED) if NESTED in spec.param else ("", "", spec.param)
        (nested.setdefault(parent, {}) if parent else given)[child] = _value(spec, values)
    fields = {f.name: f for f in dataclasses.fields(config)}
    for parent, sub in nested.items():
        given[parent] = fields[parent].default_factory(**sub)  # type: ignore[misc]  # a dataclass type
    return given


def with_config(fn: Callable[..., Any], config: type) -> Callable[..., Any]:
    """A typer callback: `fn(given, **extras)`'s own parameters after `given` are extra options
    (not config fields); the config's fields add the rest and reach `fn` as `given`."""
    specs = list(specs_of(config))
    extras = list(inspect.signature(fn, eval_str=True).parameters.values())[1:]
    own = {p.name for p in extras}

    def command(**values: Any) -> Any:
        return fn(collect(config, specs, values), **{k: v for k, v in values.items() if k in own})

    params = parameters(specs) + [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in extras]
    command.__signature__ = inspect.Signature(sorted(params, key=lambda p: p.default is not p.empty))  # type: ignore[attr-defined]
    command.__name__, command.__doc__ = fn.__name__, fn.__doc__
    return command
