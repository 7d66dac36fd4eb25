"""`seam synth`: write a small synthetic dataset in the PASCAL VOC layout."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from seam.cli._app import app
from seam.cli._util import console, fail, progress_bar


@app.command("synth")
def synth(
    out: Annotated[Path, typer.Option("--out", help="Dataset root to write (JPEGImages, SegmentationClass, ImageSets, "
                                                    "cls_labels.npy).")],
    n: Annotated[int, typer.Option("--n", help="Number of images.")] = 200,
    seed: Annotated[int, typer.Option("--seed", help="Random seed; the same seed gives the same dataset.")] = 0,
    size: Annotated[int, typer.Option("--size", help="Image side in pixels.")] = 160,
    val_fraction: Annotated[float, typer.Option("--val-fraction", help="Share of images in val.txt.")] = 0.25,
) -> None:
    """Synthetic VOC-style data: five shape/texture/colour classes, context that co-occurs
    with classes (over-activation bait) and occluded objects (under-activation)."""
    from seam.training.data.synth import generate

    if n < 1:
        fail(f"--n must be at least 1, got {n}")
    if size < 32:
        fail(f"--size must be at least 32, got {size}")
    if not 0.0 <= val_fraction < 1.0:
        fail(f"--val-fraction must be in [0, 1), got {val_fraction}")
    if out.exists() and not out.is_dir():
        fail(f"{out} exists and is not a directory")
    try:
        with progress_bar() as bar:
            task = bar.add_task("synth", total=n, status="")
            info = generate(out, n=n, seed=seed, size=size, val_fraction=val_fraction,
                            on_image=lambda iid: bar.update(task, advance=1, status=iid))
    except OSError as exc:
        fail(f"cannot write {out}: {exc.strerror or exc}")
        return
    console.print(
        f"wrote {len(info.ids)} images ({len(info.train_ids)} train, {len(info.val_ids)} val), "
        f"classes {', '.join(info.class_names[1:])} -> {info.root}")
