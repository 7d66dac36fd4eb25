"""`seam models list|publish|promote|rollback`: the versioned model repository
(seam.modelrepo.versions) from the command line; a running API and its workers pick the
changes up by themselves (hot reload, docs/models.md)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from seam.cli._app import app, new_app
from seam.cli._util import console, fail

models_app = new_app(help="The versioned model repository: list, publish, promote, roll back.")
app.add_typer(models_app, name="models")

ModelsDir = Annotated[Path, typer.Option(help="Model repository (SEAM_MODELS_DIR).", envvar="SEAM_MODELS_DIR")]


@models_app.command("list")
def list_models(models_dir: ModelsDir = Path("models"),
                as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False) -> None:
    """Every model, its versions and the promoted one (checksums are not verified here)."""
    from seam.modelrepo import versions

    try:
        models = versions.list_models(models_dir)
    except ValueError as exc:
        fail(str(exc))
    rows = [{"name": e.name, "legacy": e.legacy, "promoted": e.promoted,
             "versions": [versions.version_info(v) for v in e.versions.values()]} for e in models.values()]
    if as_json:
        typer.echo(json.dumps(rows, indent=2, default=str))
        return
    for row in rows:
        typer.echo(f"{row['name']}{' (legacy)' if row['legacy'] else ''}")
        for v in row["versions"]:
            mark = "*" if v["version"] == row["promoted"] else " "
            what = v["error"] or f"{'+'.join(v['kinds'])}: {', '.join(v.get('classes') or [])}"
            typer.echo(f"  {mark} {v['version']}  {what}")


@models_app.command("publish")
def publish(source: Annotated[list[Path], typer.Argument(help="A model dir (or one per kind, or a dir of kind "
                                                                "sub-dirs), e.g. an export's models/NAME.")],
            name: Annotated[str, typer.Option(help="Model name to publish a version of.")],
            models_dir: ModelsDir = Path("models"),
            promote: Annotated[bool, typer.Option("--promote", help="Promote it at once.")] = False) -> None:
    """Copy a model into the repository as NAME's next version (checksums verified, atomic)."""
    from seam.modelrepo import versions

    try:
        n = versions.publish_version(models_dir, name, source[0] if len(source) == 1 else source, promote=promote)
    except (ValueError, OSError) as exc:
        fail(str(exc), code=1)
    promoted = versions.resolve(models_dir, name).version == n
    console.print(f"[green]published[/] {name}:{n}{' (promoted)' if promoted else ''}")


@models_app.command("promote")
def promote(ref: Annotated[str, typer.Argument(help="NAME:VERSION to promote.")],
            models_dir: ModelsDir = Path("models")) -> None:
    """Make NAME:VERSION the version requests without a version get (checksums verified first)."""
    from seam.modelrepo import versions

    try:
        name, version = versions.parse_ref(ref)
        if name is None or version is None:
            fail("give NAME:VERSION, e.g. shapes:2")
        versions.promote(models_dir, name, version)
    except (ValueError, LookupError) as exc:
        fail(str(exc), code=1)
    console.print(f"[green]promoted[/] {name}:{version}")


@models_app.command("rollback")
def rollback(name: Annotated[str, typer.Argument(help="Model name.")], models_dir: ModelsDir = Path("models")) -> None:
    """Promote again the version promoted before the current one."""
    from seam.modelrepo import versions

    try:
        n = versions.rollback(models_dir, name)
    except (ValueError, LookupError) as exc:
        fail(str(exc), code=1)
    console.print(f"[green]rolled back[/] {name} to version {n}")
