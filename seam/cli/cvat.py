"""`seam cvat function-yaml`: the nuclio function.yaml that deploys the seam model in CVAT
(serverless auto-annotation through the seam API; docs/cvat.md)."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from seam.cli._app import app, new_app
from seam.cli._util import fail

cvat_app = new_app(help="CVAT integration: the nuclio function that auto-annotates through the seam API.")
app.add_typer(cvat_app, name="cvat")


@cvat_app.command("function-yaml")
def function_yaml(
    seam_url: Annotated[str, typer.Option(help="The seam API as the nuclio container reaches it.")],
    models_dir: Annotated[Path | None, typer.Option(
        help="Read the classes from this model repository (default: models/).")] = None,
    from_url: Annotated[str | None, typer.Option(help="Read the classes from a running seam API instead.")] = None,
    api_key: Annotated[str | None, typer.Option(help="X-API-Key for --from-url.")] = None,
    name: Annotated[str, typer.Option(help="Function name (metadata.name in nuclio).")] = "seam-wsss",
) -> None:
    """Print the nuclio function.yaml for the model's classes (deploy it with `nuctl deploy`)."""
    import httpx

    from seam.service.integrations.cvat import function_yaml as build
    from seam.service.integrations.cvat import model_classes

    try:
        classes = model_classes(None if models_dir is None else str(models_dir), from_url, api_key)
    except (OSError, ValueError, httpx.HTTPError) as exc:
        fail(f"cannot read the model's classes: {exc}")
    typer.echo(build(classes, seam_url, name), nl=False)
