"""`seam rw`: AffinityNet random walk of SEAM CAMs into VOC-palette pseudo labels."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from seam.cli._app import app, config_command
from seam.cli._util import console, fail, progress_bar


def _config() -> type:
    from seam.training.label_dirs import RandomWalkConfig

    return RandomWalkConfig


@config_command(app, "rw", _config)
def rw(
    given: dict[str, Any],
    affinity: Annotated[Path, typer.Option("--affinity", help="AffinityNet checkpoint (authors' or ours).")],
    cams: Annotated[Path, typer.Option("--cams", help="CAM directory from seam cam: <id>.npz, or the authors' "
                                                      "<id>.npy.")],
    images: Annotated[Path, typer.Option("--images", help="Image directory or list file.")],
    out: Annotated[Path, typer.Option("--out", help="Output directory for <id>.png pseudo labels.")],
    image_root: Annotated[Path | None, typer.Option(help="Where list-file entries live.")] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Recompute labels that already exist.")] = False,
    device: Annotated[str | None, typer.Option(help="torch device for the AffinityNet features.")] = None,
) -> None:
    """Random walk as the authors' infer_aff: T = column-normalised A^beta (+ I) over pairs within
    the radius, CAMs pooled to stride 8 and propagated 2^logt steps, upsampled, argmax."""
    from seam.common.files import list_images
    from seam.training.evaluation.evaluate import find_cam_file
    from seam.training.inference.cam import default_device
    from seam.training.label_dirs import RandomWalkConfig, random_walk_dir, write_classes
    from seam.training.models.checkpoint import CheckpointError
    from seam.training.models.registry import model_from_checkpoint

    if not cams.is_dir():
        fail(f"CAM directory not found: {cams}")
    try:
        items = list_images(images, image_root)
    except FileNotFoundError as exc:
        fail(str(exc))
        return
    with_cams = [(i, p) for i, p in items if find_cam_file(cams, i) is not None]
    if not with_cams:
        fail(f"none of the {len(items)} images has a CAM file in {cams}")
    if len(with_cams) < len(items):
        console.print(f"{len(items) - len(with_cams)} images have no CAM file in {cams}: skipped")
    try:
        model, meta = model_from_checkpoint(affinity, "affinity")
    except CheckpointError as exc:
        fail(str(exc))
        return
    if meta.get("class_names"):
        write_classes(out, meta["class_names"])
    cfg = RandomWalkConfig(**given)
    try:
        with progress_bar() as bar:
            task = bar.add_task("random walk", total=len(with_cams), status="")
            stats = random_walk_dir(model, with_cams, cams, out, cfg, default_device(device), overwrite,
                                    on_image=lambda i: bar.update(task, advance=1, status=i))
    except (OSError, ValueError) as exc:
        fail(str(exc))
        return
    console.print(f"{stats['written']} pseudo labels written to {out} ({stats['skipped']} already there)"
                  + (f"; walk {stats['walk_ms_per_image']:.1f} ms/image" if stats["walk_ms_per_image"] else ""))
