"""`seam train affinity`: train AffinityNet on SEAM-derived labels (the authors' train_aff.py)."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from seam.cli import _train_options as opt
from seam.cli import _training
from seam.cli._util import console, fail, progress_bar

AffLabels = Annotated[Path, typer.Option(
    "--labels", help="AffinityNet label PNGs <id>.png (0 bg, c+1 class, 255 unknown).")]
Cams = Annotated[Path | None, typer.Option(
    help="SEAM CAM dir (<id>.npy): first write the missing --labels from it (la/ha + CRF).")]
LaAlpha = Annotated[float, typer.Option(help="With --cams: confident-foreground power (la).")]
HaAlpha = Annotated[float, typer.Option(help="With --cams: confident-background power (ha).")]
NoCrf = Annotated[bool, typer.Option("--no-crf", help="With --cams: skip the dense CRF.")]
TrainList = Annotated[Path | None, typer.Option(
    help="Image list (default: the data set's training list, images with labels).")]
ImageLabels = Annotated[Path | None, typer.Option(help="The data set's image-level label file, if not its default.")]
Weights = Annotated[Path | None, typer.Option(
    help="Initial weights: ImageNet .params, SEAM / AffinityNet checkpoint or run dir.")]
Lr = Annotated[float | None, typer.Option(
    help="Base learning rate, new layers 10x (recipe: 0.01, SEAM's train_aff.py; psa's 0.1 is another release).")]
Crop = Annotated[int | None, typer.Option(help="Square training crop, multiple of 8 (recipe: 448).")]
Radius = Annotated[int, typer.Option(help="Pair radius on the stride-8 grid.")]
NoFlip = Annotated[bool, typer.Option("--no-flip", help="No horizontal flip.")]


def train_affinity(
    data: opt.Data,
    labels: AffLabels,
    cams: Cams = None,
    la_alpha: LaAlpha = 4.0,
    ha_alpha: HaAlpha = 24.0,
    no_crf: NoCrf = False,
    dataset: opt.Dataset = "auto",
    train_list: TrainList = None,
    image_labels: ImageLabels = None,
    weights: Weights = None,
    backbone: opt.Backbone = "resnet38",
    recipe: opt.Recipe = None,
    batch_size: opt.RBatch = None,
    epochs: opt.REpochs = None,
    lr: Lr = None,
    weight_decay: opt.RWeightDecay = None,
    momentum: opt.RMomentum = None,
    authors_momentum: opt.AuthorsMomentum = False,
    crop: Crop = None,
    radius: Radius = 5,
    no_jitter: opt.NoJitter = False,
    no_flip: NoFlip = False,
    out: opt.Out = Path("runs/affinity"),
    resume: opt.Resume = False,
    seed: opt.Seed = 0,
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
    from seam.training.data.datasets import DatasetError
    from seam.training.models.checkpoint import CheckpointError
    from seam.training.trainers.affinity import AFFINITY_FINAL, AffinityTrainConfig
    from seam.training.trainers.affinity import train_affinity as run
    from seam.training.trainers.trainer import TrainingError

    recipe = _training.dataset_recipe(recipe, dataset, data)
    path = _training.path_str
    cfg = _training.build_config(lambda: AffinityTrainConfig.from_recipe(
        recipe, data=str(data), labels=str(labels), dataset=dataset, train_list=path(train_list),
        image_labels=path(image_labels), weights=path(weights), backbone=backbone, batch_size=batch_size,
        epochs=epochs, lr=lr, weight_decay=weight_decay, momentum=momentum, authors_momentum=authors_momentum,
        crop=crop, radius=radius, jitter=False if no_jitter else None, flip=False if no_flip else None,
        out=str(out), seed=seed, device=device, workers=workers, max_minutes=max_minutes, amp=amp,
        deterministic=deterministic, log_every=max(1, log_every), resume=resume, stop_after=stop_after))
    errors = (DatasetError, CheckpointError, TrainingError, FileNotFoundError, RuntimeError, ValueError)
    if cams is not None and _training.main_rank():
        try:
            _write_labels(dataset, data, path(train_list), path(image_labels), cams, labels, la_alpha, ha_alpha,
                          not no_crf)
        except errors as exc:
            fail(str(exc))
    _training.train_stage(run, cfg, "AffinityNet", errors)
    _training.print_weights(out, AFFINITY_FINAL)


def _write_labels(dataset: str, data: Path, train_list: str | None, image_labels: str | None, cams: Path,
                  labels: Path, la_alpha: float, ha_alpha: float, crf: bool) -> None:
    """--cams: the AffinityNet labels the training needs, written before it starts (existing ones kept)."""
    from seam.training.data.datasets import build_dataset
    from seam.training.pipeline import write_affinity_labels

    ds = build_dataset(dataset, data, train_list, image_labels, check_images=False)
    with progress_bar() as bar:
        task = bar.add_task("aff labels", total=len(ds), status="")
        stats = write_affinity_labels(list(zip(ds.ids, ds.paths, strict=True)), cams, labels, la_alpha, ha_alpha,
                                      crf=crf, on_image=lambda i: bar.update(task, advance=1, status=i))
    console.print(f"AffinityNet labels: {stats['written']} written, {stats['skipped']} already there")
