"""`seam train deeplab`: DeepLab-LargeFOV (ResNet-38) on pseudo labels."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from seam.cli import _training
from seam.cli._app import config_command, train_app
from seam.cli._util import fail
from seam.common.options import parse_n_floats

# one option for two config fields (scale_min, scale_max)
ScaleRange = Annotated[str | None, typer.Option(help="Random rescale MIN,MAX (recipe: 0.5,1.5).")]


def _config() -> type:
    from seam.training.trainers.deeplab import DeepLabTrainConfig

    return DeepLabTrainConfig


@config_command(train_app, "deeplab", _config)
def train_deeplab(given: dict[str, Any], scale_range: ScaleRange = None) -> None:
    """Train DeepLab-LargeFOV: random scale 0.5-1.5, flip, crop (255-padded labels), SGD poly,
    cross-entropy ignoring 255. Writes RUN_DIR/deeplab_final.pth + .json."""
    from seam.training.models.checkpoint import CheckpointError
    from seam.training.trainers.deeplab import DEEPLAB_FINAL, DeepLabDataError, DeepLabTrainConfig
    from seam.training.trainers.deeplab import train_deeplab as run
    from seam.training.trainers.run_dir import TrainingError

    if scale_range is not None:
        try:
            given["scale_min"], given["scale_max"] = parse_n_floats(2, "MIN,MAX")(scale_range)
        except ValueError as exc:
            fail(f"--scale-range {exc}")
    recipe = given.pop("recipe")
    recipe = _default_recipe(Path(given["images"])) if recipe is None else recipe
    cfg = _training.recipe_config(DeepLabTrainConfig, given, recipe)
    _training.train_stage(run, cfg, "DeepLab",
                          (DeepLabDataError, CheckpointError, TrainingError, FileNotFoundError, ValueError))
    _training.print_weights(cfg.out, DEEPLAB_FINAL)


def _default_recipe(images: Path) -> str:
    """release when the images are a VOC layout's JPEGImages (directly or through a list), else tuned."""
    from seam.training.data.datasets import default_recipe, detect_dataset_kind

    root = images if images.is_dir() else images.parent
    for cand in (root, root.parent, root.parent.parent, root.parent.parent.parent):
        if (cand / "JPEGImages").is_dir():
            return default_recipe(detect_dataset_kind(cand), "deeplab")
    return default_recipe("folder", "deeplab")
