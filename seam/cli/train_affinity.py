"""`seam train affinity`: train AffinityNet on SEAM-derived labels (the authors' train_aff.py)."""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Annotated, Any

import typer

from seam.cli import _training
from seam.cli._app import config_command, train_app
from seam.cli._util import console, fail, progress_bar

# label writing before the training: options of this command, not of the AffinityNet config
Cams = Annotated[Path | None, typer.Option(
    help="SEAM CAM dir (<id>.npy): first write the missing --labels from it (la/ha + CRF).")]
LaAlpha = Annotated[float | None, typer.Option(
    help="With --cams: confident-foreground power (la); default: as the pipeline's --la-alpha.")]
HaAlpha = Annotated[float | None, typer.Option(
    help="With --cams: confident-background power (ha); default: as the pipeline's --ha-alpha.")]
NoCrf = Annotated[bool, typer.Option("--no-crf", help="With --cams: skip the dense CRF.")]


def _config() -> type:
    from seam.training.trainers.affinity import AffinityTrainConfig

    return AffinityTrainConfig


@config_command(train_app, "affinity", _config)
def train_affinity(given: dict[str, Any], cams: Cams = None, la_alpha: LaAlpha = None, ha_alpha: HaAlpha = None,
                   no_crf: NoCrf = False) -> None:
    """Train AffinityNet: stride-8 features, pair affinities within the radius, loss bg/4 + fg/4 + neg/2; frozen \
BN/conv1a/b2, poly lr. Writes RUN_DIR/affinity_final.pth + .json.

    Default recipe: `release` (SEAM's train_aff.py: lr 0.01, momentum 5e-4, fp32); `--recipe tuned`: momentum 0.9, \
AMP on CUDA. Options you give override it."""
    from seam.training.data.datasets import DatasetError
    from seam.training.models.checkpoint import CheckpointError
    from seam.training.trainers.affinity import AFFINITY_FINAL, AffinityTrainConfig
    from seam.training.trainers.affinity import train_affinity as run
    from seam.training.trainers.run_dir import TrainingError

    cfg = _training.recipe_config(AffinityTrainConfig, given, _training.dataset_recipe(given, "affinity"))
    errors = (DatasetError, CheckpointError, TrainingError, FileNotFoundError, RuntimeError, ValueError)
    if cams is not None and _training.main_rank():
        try:
            _write_labels(cfg, cams, la_alpha, ha_alpha, not no_crf)
        except errors as exc:
            fail(str(exc))
    _training.train_stage(run, cfg, "AffinityNet", errors)
    _training.print_weights(cfg.out, AFFINITY_FINAL)


def _write_labels(cfg: Any, cams: Path, la_alpha: float | None, ha_alpha: float | None, crf: bool) -> None:
    """--cams: the AffinityNet labels the training needs, written before it starts (existing ones kept)."""
    from seam.training.data.datasets import build_dataset
    from seam.training.label_dirs import write_affinity_labels
    from seam.training.pipeline import PipelineConfig

    defaults = {f.name: f.default for f in dataclasses.fields(PipelineConfig)}
    la_alpha = defaults["la_alpha"] if la_alpha is None else la_alpha
    ha_alpha = defaults["ha_alpha"] if ha_alpha is None else ha_alpha

    ds = build_dataset(cfg.dataset, Path(cfg.data), cfg.train_list, cfg.image_labels, check_images=False)
    with progress_bar() as bar:
        task = bar.add_task("aff labels", total=len(ds), status="")
        stats = write_affinity_labels(list(zip(ds.ids, ds.paths, strict=True)), cams, Path(cfg.labels), la_alpha,
                                      ha_alpha, crf=crf, on_image=lambda i: bar.update(task, advance=1, status=i))
    console.print(f"AffinityNet labels: {stats['written']} written, {stats['skipped']} already there")
