"""`seam segment`: DeepLab predictions as VOC-palette PNGs."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from seam.cli._app import app
from seam.cli._util import console, fail, parse_floats, progress_bar


@app.command("segment")
def segment(
    checkpoint: Annotated[Path, typer.Option("--checkpoint", help="DeepLab checkpoint (deeplab_final.pth).")],
    images: Annotated[Path, typer.Option("--images", help="Image directory or list file.")],
    out: Annotated[Path, typer.Option("--out", help="Output directory for <id>.png.")],
    scales: Annotated[str, typer.Option(help="Comma-separated test scales (the authors': "
                                             "0.5-1.75).")] = "0.5,0.75,1.0,1.25,1.5,1.75",
    no_flip: Annotated[bool, typer.Option("--no-flip", help="Skip the flipped passes.")] = False,
    crf: Annotated[bool, typer.Option(
        "--crf/--no-crf", help="Dense CRF (1 iteration, bilateral sxy 32) on the softmax, as the authors' test "
                               "(needs pydensecrf2).")] = True,
    image_root: Annotated[Path | None, typer.Option(help="Where list-file entries live.")] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Recompute existing outputs.")] = False,
    device: Annotated[str | None, typer.Option(help="torch device (default: cuda if available).")] = None,
) -> None:
    """Multi-scale + flip DeepLab inference as the authors' test protocol: logits upsampled to
    the image and averaged over passes, softmax, dense CRF (--no-crf to skip), argmax."""
    from seam.common.files import list_images
    from seam.training.inference.cam import default_device
    from seam.training.label_dirs import segment_dir
    from seam.training.models.checkpoint import CheckpointError
    from seam.training.models.registry import model_from_checkpoint

    scale_tuple = parse_floats(scales)
    try:
        items = list_images(images, image_root)
    except FileNotFoundError as exc:
        fail(str(exc))
        return
    try:
        model, _ = model_from_checkpoint(checkpoint, "deeplab")
    except CheckpointError as exc:
        fail(str(exc))
        return
    try:
        with progress_bar() as bar:
            task = bar.add_task("segment", total=len(items), status="")
            stats = segment_dir(model, items, out, scale_tuple, not no_flip, crf, default_device(device),
                                overwrite, on_image=lambda i: bar.update(task, advance=1, status=i))
    except (OSError, ValueError, RuntimeError) as exc:
        fail(str(exc))
        return
    console.print(f"{stats['written']} label maps written to {out} ({stats['skipped']} already there)")
