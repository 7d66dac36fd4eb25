"""`seam train deeplab`: DeepLab-LargeFOV (ResNet-38) on pseudo labels."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from seam.commands import _train_options as opt
from seam.commands._util import console, fail


def train_deeplab(
    images: Annotated[Path, typer.Option("--images", help="Image directory or list file (ids or VOC-style paths).")],
    labels: Annotated[Path, typer.Option("--labels", help="Pseudo-label PNGs <id>.png (VOC palette, 255 ignored).")],
    image_root: Annotated[Path | None, typer.Option(help="Where list-file entries live.")] = None,
    classes: Annotated[str | None, typer.Option(help="Class names (comma list or classes.txt); default LABELS/classes.txt, then the data root's, then VOC.")] = None,
    weights: Annotated[Path | None, typer.Option(help="Initial weights: ImageNet .params, a SEAM / DeepLab checkpoint or run dir.")] = None,
    backbone: Annotated[str, typer.Option(help="resnet38 or resnet38_small (CPU).")] = "resnet38",
    batch_size: Annotated[int, typer.Option(help="Global batch size.")] = 8,
    epochs: opt.Epochs = 20,
    lr: Annotated[float, typer.Option(help="Base learning rate (head 10x).")] = 1e-3,
    weight_decay: Annotated[float, typer.Option(help="Weight decay on weights.")] = 5e-4,
    momentum: opt.Momentum = 0.9,
    crop: Annotated[int, typer.Option(help="Square training crop (image padded with 0, labels with 255).")] = 448,
    scale_range: Annotated[str, typer.Option(help="Random rescale MIN,MAX.")] = "0.5,1.5",
    jitter: Annotated[bool, typer.Option("--jitter", help="Colour jitter.")] = False,
    out: opt.Out = Path("runs/deeplab"),
    resume: opt.Resume = False,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    device: opt.Device = None,
    workers: opt.Workers = None,
    max_minutes: opt.MaxMinutes = None,
    amp: opt.Amp = None,
    deterministic: opt.Deterministic = True,
    log_every: opt.LogEvery = 10,
    stop_after: opt.StopAfter = None,
) -> None:
    """Train DeepLab-LargeFOV: random scale 0.5-1.5, flip, crop (255-padded labels), SGD poly,
    cross-entropy ignoring 255. Writes RUN_DIR/deeplab_final.pth + .json."""
    from seam.commands._util import parse_floats
    from training.engine.deeplab import DEEPLAB_FINAL, DeepLabDataError, DeepLabTrainConfig
    from training.engine.deeplab import train_deeplab as run
    from training.engine.trainer import TrainingError
    from training.models.checkpoint import CheckpointError

    lo_hi = parse_floats(scale_range)
    if len(lo_hi) != 2:
        fail(f"--scale-range takes MIN,MAX, got {scale_range!r}")
    cfg = opt.build_config(
        DeepLabTrainConfig,
        images=str(images), labels=str(labels), image_root=opt.path_str(image_root), classes=classes,
        weights=opt.path_str(weights), backbone=backbone, batch_size=batch_size, epochs=epochs, lr=lr,
        weight_decay=weight_decay, momentum=momentum, crop=crop, scale_min=lo_hi[0], scale_max=lo_hi[1],
        jitter=jitter, out=str(out), seed=seed, device=device, workers=workers, max_minutes=max_minutes,
        amp=amp, deterministic=deterministic, log_every=max(1, log_every), resume=resume, stop_after=stop_after)
    try:
        opt.run_with_progress(run, cfg, "DeepLab")
    except (DeepLabDataError, CheckpointError, TrainingError, FileNotFoundError, ValueError) as exc:
        fail(str(exc))
        return
    console.print(f"weights: {out / DEEPLAB_FINAL}  sidecar: {(out / DEEPLAB_FINAL).with_suffix('.json')}")

