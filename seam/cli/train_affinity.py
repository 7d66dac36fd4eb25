"""`seam train affinity`: train AffinityNet on SEAM-derived labels (the authors' train_aff.py)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from seam.cli import _train_options as opt
from seam.cli._util import console, fail, progress_bar


def train_affinity(
    data: Annotated[
        Path, typer.Option("--data", help="Data root: VOC (JPEGImages/), a synth set, or an image folder.")
    ],
    labels: Annotated[
        Path, typer.Option("--labels", help="AffinityNet label PNGs <id>.png (0 bg, c+1 class, 255 unknown).")
    ],
    cams: Annotated[
        Path | None,
        typer.Option(help="SEAM CAM dir (<id>.npy): first write the missing --labels from it (la/ha + CRF)."),
    ] = None,
    la_alpha: Annotated[float, typer.Option(help="With --cams: confident-foreground power (la).")] = 4.0,
    ha_alpha: Annotated[float, typer.Option(help="With --cams: confident-background power (ha).")] = 24.0,
    no_crf: Annotated[bool, typer.Option("--no-crf", help="With --cams: skip the dense CRF.")] = False,
    dataset: Annotated[str, typer.Option(help="voc | folder | synth | auto (detected from the layout).")] = "auto",
    train_list: Annotated[
        Path | None, typer.Option(help="Image list (default: the data set's training list, images with labels).")
    ] = None,
    image_labels: Annotated[
        Path | None, typer.Option(help="The data set's image-level label file, if not its default.")
    ] = None,
    weights: Annotated[
        Path | None,
        typer.Option(help="Initial weights: ImageNet .params, SEAM / AffinityNet checkpoint or run dir."),
    ] = None,
    backbone: Annotated[str, typer.Option(help="resnet38 (the paper) or resnet38_small (CPU).")] = "resnet38",
    recipe: opt.Recipe = None,
    batch_size: opt.RBatch = None,
    epochs: opt.REpochs = None,
    lr: Annotated[
        float | None,
        typer.Option(
            help="Base learning rate, new layers 10x [recipe: 0.01, SEAM's train_aff.py; psa's 0.1 is another release]."
        ),
    ] = None,
    weight_decay: opt.RWeightDecay = None,
    momentum: opt.RMomentum = None,
    authors_momentum: opt.AuthorsMomentum = False,
    crop: Annotated[int | None, typer.Option(help="Square training crop, multiple of 8 [recipe: 448].")] = None,
    radius: Annotated[int, typer.Option(help="Pair radius on the stride-8 grid.")] = 5,
    no_jitter: opt.NoJitter = False,
    no_flip: Annotated[bool, typer.Option("--no-flip", help="No horizontal flip.")] = False,
    out: opt.Out = Path("runs/affinity"),
    resume: opt.Resume = False,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    device: opt.Device = None,
    workers: opt.Workers = None,
    max_minutes: opt.MaxMinutes = None,
    amp: opt.RAmp = None,
    deterministic: opt.Deterministic = True,
    log_every: opt.LogEvery = 10,
    stop_after: opt.StopAfter = None,
) -> None:
    """Train AffinityNet: stride-8 features, pair affinities within the radius, loss bg/4 + fg/4 + neg/2; frozen \
BN/conv1a/b2, poly lr. Writes RUN_DIR/affinity_final.pth + .json.

    Default recipe: `release` (SEAM's train_aff.py: lr 0.01, momentum 5e-4, fp32); `--recipe tuned`: momentum 0.9, \
AMP on CUDA. Options you give override it."""
    from training.data.datasets import DatasetError, build_dataset, detect_dataset_kind
    from training.engine.affinity import AFFINITY_FINAL, AffinityTrainConfig
    from training.engine.affinity import train_affinity as run
    from training.engine.recipes import default_recipe
    from training.engine.trainer import TrainingError
    from training.models.checkpoint import CheckpointError

    if recipe is None:
        recipe = default_recipe(dataset if dataset != "auto" else detect_dataset_kind(data))
    try:
        AffinityTrainConfig.from_recipe(recipe)  # validates the name
    except ValueError as exc:
        fail(str(exc))
    cfg = opt.build_config(
        lambda **kw: AffinityTrainConfig.from_recipe(recipe, **kw),
        data=str(data), labels=str(labels), dataset=dataset, train_list=opt.path_str(train_list),
        image_labels=opt.path_str(image_labels), weights=opt.path_str(weights), backbone=backbone,
        batch_size=batch_size, epochs=epochs, lr=lr, weight_decay=weight_decay, momentum=momentum,
        authors_momentum=authors_momentum, crop=crop, radius=radius, jitter=False if no_jitter else None,
        flip=False if no_flip else None,
        out=str(out), seed=seed, device=device, workers=workers, max_minutes=max_minutes, amp=amp,
        deterministic=deterministic, log_every=max(1, log_every), resume=resume, stop_after=stop_after)
    main_rank = os.environ.get("RANK", "0") == "0"
    try:
        if cams is not None and main_rank:
            from training.pipeline import write_affinity_labels

            ds = build_dataset(dataset, data, opt.path_str(train_list), opt.path_str(image_labels), check_images=False)
            with progress_bar() as bar:
                task = bar.add_task("aff labels", total=len(ds), status="")
                stats = write_affinity_labels(list(zip(ds.ids, ds.paths, strict=True)), cams, labels, la_alpha,
                                              ha_alpha, crf=not no_crf,
                                              on_image=lambda i: bar.update(task, advance=1, status=i))
            console.print(f"AffinityNet labels: {stats['written']} written, {stats['skipped']} already there")
        opt.run_with_progress(run, cfg, "AffinityNet")
    except (DatasetError, CheckpointError, TrainingError, FileNotFoundError, RuntimeError, ValueError) as exc:
        fail(str(exc))
        return
    console.print(f"weights: {out / AFFINITY_FINAL}  sidecar: {(out / AFFINITY_FINAL).with_suffix('.json')}")

