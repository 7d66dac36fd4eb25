"""`seam train deeplab`: DeepLab-LargeFOV (ResNet-38) on pseudo labels."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from seam.cli import _train_options as opt
from seam.cli import _training
from seam.cli._util import fail, parse_floats

Images = Annotated[Path, typer.Option("--images", help="Image directory or list file (ids or VOC-style paths).")]
Labels = Annotated[Path, typer.Option("--labels", help="Pseudo-label PNGs <id>.png (VOC palette, 255 ignored).")]
ImageRoot = Annotated[Path | None, typer.Option(help="Where list-file entries live.")]
Classes = Annotated[str | None, typer.Option(
    help="Class names (comma list or classes.txt); default LABELS/classes.txt, then the data root's, then VOC.")]
Weights = Annotated[Path | None, typer.Option(
    help="Initial weights: ImageNet .params, a SEAM / DeepLab checkpoint or run dir.")]
Backbone = Annotated[str, typer.Option(help="resnet38 or resnet38_small (CPU).")]
Recipe = Annotated[str | None, typer.Option(
    help="release: the authors' DeepLab run (semantic-segmentation-codebase seamv1-pseudovoc: batch 10, "
    "20000 iterations, every BN on batch statistics of 5 images, HSV jitter, all convs trained). tuned: batch 8, "
    "20 epochs, frozen backbone BN, head BN trained. Default: release for VOC images, tuned otherwise.")]
Batch = Annotated[int | None, typer.Option(help="Global batch size (recipe: release 10, tuned 8).")]
Epochs = Annotated[int | None, typer.Option(
    help="Epochs (recipe: tuned 20; release counts 20000 iterations, which given epochs replace).")]
Iterations = Annotated[int | None, typer.Option(
    help="Stop after this many iterations; wins over --epochs (recipe: release 20000).")]
BnGroup = Annotated[int | None, typer.Option(
    help="BN batch statistics per this many images of each device's batch, running statistics from the first "
    "group: the release's 2 GPUs x 5 on one device (recipe: release 5, tuned off).")]
Lr = Annotated[float | None, typer.Option(help="Base learning rate, head 10x (recipe: 1e-3).")]
Momentum = Annotated[float | None, typer.Option(help="SGD momentum (recipe: 0.9).")]
Crop = Annotated[int | None, typer.Option(
    help="Square training crop, image padded with 0, labels with 255 (recipe: 448).")]
ScaleRange = Annotated[str, typer.Option(help="Random rescale MIN,MAX.")]
Jitter = Annotated[bool, typer.Option("--jitter", help="Colour jitter.")]


def train_deeplab(
    images: Images,
    labels: Labels,
    image_root: ImageRoot = None,
    classes: Classes = None,
    weights: Weights = None,
    backbone: Backbone = "resnet38",
    recipe: Recipe = None,
    batch_size: Batch = None,
    epochs: Epochs = None,
    iterations: Iterations = None,
    bn_group: BnGroup = None,
    lr: Lr = None,
    weight_decay: opt.RWeightDecay = None,
    momentum: Momentum = None,
    crop: Crop = None,
    scale_range: ScaleRange = "0.5,1.5",
    jitter: Jitter = False,
    out: opt.Out = Path("runs/deeplab"),
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
    """Train DeepLab-LargeFOV: random scale 0.5-1.5, flip, crop (255-padded labels), SGD poly,
    cross-entropy ignoring 255. Writes RUN_DIR/deeplab_final.pth + .json."""
    from seam.training.models.checkpoint import CheckpointError
    from seam.training.trainers.deeplab import DEEPLAB_FINAL, DeepLabDataError, DeepLabTrainConfig
    from seam.training.trainers.deeplab import train_deeplab as run
    from seam.training.trainers.trainer import TrainingError

    lo_hi = parse_floats(scale_range)
    if len(lo_hi) != 2:
        fail(f"--scale-range takes MIN,MAX, got {scale_range!r}")
    recipe = _default_recipe(images) if recipe is None else recipe
    cfg = _training.build_config(lambda: DeepLabTrainConfig.from_recipe(
        recipe, images=str(images), labels=str(labels), image_root=_training.path_str(image_root), classes=classes,
        weights=_training.path_str(weights), backbone=backbone, batch_size=batch_size, epochs=epochs,
        max_iterations=iterations, bn_group=bn_group, lr=lr, weight_decay=weight_decay, momentum=momentum, crop=crop,
        scale_min=lo_hi[0], scale_max=lo_hi[1], jitter=jitter or None, out=str(out), seed=seed, device=device,
        workers=workers, max_minutes=max_minutes, amp=amp, deterministic=deterministic, log_every=max(1, log_every),
        resume=resume, stop_after=stop_after))
    _training.train_stage(run, cfg, "DeepLab",
                          (DeepLabDataError, CheckpointError, TrainingError, FileNotFoundError, ValueError))
    _training.print_weights(out, DEEPLAB_FINAL)


def _default_recipe(images: Path) -> str:
    """release when the images are a VOC layout's JPEGImages (directly or through a list), else tuned."""
    from seam.training.data.datasets import detect_dataset_kind
    from seam.training.trainers.recipes import default_recipe

    root = images if images.is_dir() else images.parent
    for cand in (root, root.parent, root.parent.parent, root.parent.parent.parent):
        if (cand / "JPEGImages").is_dir():
            return default_recipe(detect_dataset_kind(cand), "deeplab")
    return default_recipe("folder", "deeplab")
