"""`seam train seam`: train SEAM as the authors' train_SEAM.py (single process, or DDP
under torchrun), save the authors'-format weights + sidecar, score pseudo labels."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from seam.cli import _train_options as opt
from seam.cli import _training
from seam.cli._util import console, parse_floats

TrainList = Annotated[Path | None, typer.Option(
    help="Image list (ids or VOC-style paths). VOC default: the authors' train_aug.txt.")]
Labels = Annotated[Path | None, typer.Option(
    help="Image-level labels: cls_labels.npy, JSON {image: [classes]} or CSV image,classes.")]
Classes = Annotated[str | None, typer.Option(help="Folder sets: class names, comma-separated or a classes.txt path.")]
Weights = Annotated[Path | None, typer.Option(
    help="Initial weights: ImageNet .params, a state dict (authors' or ours) or a run dir.")]
ResizeRange = Annotated[str | None, typer.Option(
    help="Random long side MIN,MAX (default 448,768 scaled by crop/448).")]
Jitter = Annotated[str | None, typer.Option(
    help="ColorJitter brightness,contrast,saturation,hue (recipe: 0.3,0.3,0.3,0.1).")]
Seed = Annotated[int, typer.Option(help="Random seed (data order, augmentation, init, dropout).")]
Threads = Annotated[int | None, typer.Option(help="torch CPU threads (default: torch's choice, all cores).")]
NoEr = Annotated[bool, typer.Option("--no-er", help="Table 1: no equivariant regularisation.")]
NoPcm = Annotated[bool, typer.Option("--no-pcm", help="Table 1: no PCM / ECR (with --no-er: the CAM baseline).")]
NoOhem = Annotated[bool, typer.Option("--no-ohem", help="Table 1: plain mean instead of OHEM on ECR.")]
Transform = Annotated[str, typer.Option(
    help="Table 3: siamese transform(s), e.g. rescale or rescale,flip (rotate, translate).")]
SiameseScale = Annotated[float | None, typer.Option(help="Rescale factor of the second branch (recipe: 0.3).")]
EvalList = Annotated[Path | None, typer.Option(help="Images to score pseudo labels on (default: the training list).")]
EvalScales = Annotated[str, typer.Option(help="CAM scales for the evaluation.")]
NoEval = Annotated[bool, typer.Option("--no-eval", help="Skip the pseudo-label evaluation.")]
SaveCams = Annotated[bool, typer.Option("--save-cams", help="Keep the evaluation CAMs in RUN_DIR/cams.")]
BnCalibration = Annotated[int | None, typer.Option(
    help="Batches to calibrate frozen BN statistics (default 10 without --weights, else 0).")]


def train_seam(
    data: opt.Data,
    dataset: opt.Dataset = "auto",
    train_list: TrainList = None,
    labels: Labels = None,
    classes: Classes = None,
    weights: Weights = None,
    backbone: opt.Backbone = "resnet38",
    recipe: opt.Recipe = None,
    batch_size: opt.RBatch = None,
    epochs: opt.REpochs = None,
    lr: opt.RLr = None,
    weight_decay: opt.RWeightDecay = None,
    momentum: opt.RMomentum = None,
    authors_momentum: opt.AuthorsMomentum = False,
    crop: opt.RCrop = None,
    resize_range: ResizeRange = None,
    jitter: Jitter = None,
    no_jitter: opt.NoJitter = False,
    out: opt.Out = Path("runs/seam"),
    resume: opt.Resume = False,
    seed: Seed = 0,
    device: opt.Device = None,
    workers: opt.Workers = None,
    threads: Threads = None,
    max_minutes: opt.MaxMinutes = None,
    amp: opt.RAmp = None,
    no_er: NoEr = False,
    no_pcm: NoPcm = False,
    no_ohem: NoOhem = False,
    transform: Transform = "rescale",
    siamese_scale: SiameseScale = None,
    eval_list: EvalList = None,
    eval_scales: EvalScales = "0.5,1.0,1.5,2.0",
    no_eval: NoEval = False,
    save_cams: SaveCams = False,
    deterministic: opt.Deterministic = True,
    bn_calibration: BnCalibration = None,
    log_every: opt.LogEvery = 10,
    stop_after: opt.StopAfter = None,
) -> None:
    """Train SEAM: siamese rescale branch, classification + ER + ECR (OHEM) losses, PCM, frozen BN, poly lr. Writes \
RUN_DIR/seam_final.pth (authors' format) + .json.

    Default recipe: `release`. With --dataset voc (or a VOC layout found by --dataset auto) a run therefore trains \
exactly as the authors' published runs (SGD momentum 5e-4 from their optimiser's positional-argument slip, fp32, \
batch 8, 8 epochs, crop 448, lr 0.01), which is what produced the paper's numbers; other data gets it too, because \
`tuned` (momentum 0.9, AMP on CUDA) measured no better on the synthetic ablation (docs/training.md). Options you \
give override the recipe; the run prints the recipe and stores it in the sidecar."""
    from seam.training.data.datasets import DatasetError
    from seam.training.models.checkpoint import CheckpointError
    from seam.training.trainers.siamese import parse_transforms
    from seam.training.trainers.state import SEAM_FINAL
    from seam.training.trainers.trainer import TrainConfig, TrainingError, train

    path = _training.path_str
    cfg = _training.build_config(lambda: _with_jitter(TrainConfig.from_recipe(
        _training.dataset_recipe(recipe, dataset, data), data=str(data), dataset=dataset,
        train_list=path(train_list), labels=path(labels), classes=classes, weights=path(weights), backbone=backbone,
        batch_size=batch_size, epochs=epochs, lr=lr, weight_decay=weight_decay, momentum=momentum,
        authors_momentum=authors_momentum, crop=crop, resize_long=_pair(resize_range, "--resize-range"),
        out=str(out), seed=seed, device=device, workers=workers, threads=threads, max_minutes=max_minutes, amp=amp,
        er=not no_er, pcm=not no_pcm, ohem=not no_ohem, transforms=parse_transforms(transform),
        siamese_scale=siamese_scale, evaluate=not no_eval, eval_list=path(eval_list),
        eval_scales=parse_floats(eval_scales), save_cams=save_cams, deterministic=deterministic,
        log_every=max(1, log_every), resume=resume, bn_calibration=bn_calibration, stop_after=stop_after,
    ), jitter, no_jitter))
    result = _training.train_stage(train, cfg, "SEAM", (DatasetError, CheckpointError, TrainingError,
                                                        FileNotFoundError), progress=_seam_progress)
    _training.print_weights(out, SEAM_FINAL)
    if _training.main_rank():
        _print_eval(result.get("metrics", {}).get("eval"))


def _pair(text: str | None, name: str) -> tuple[int, int] | None:
    if text is None:
        return None
    vals = parse_floats(text)
    if len(vals) != 2:
        raise typer.BadParameter(f"{name} takes MIN,MAX, got {text!r}")
    return int(vals[0]), int(vals[1])


def _with_jitter(cfg: Any, jitter: str | None, no_jitter: bool) -> Any:
    """--jitter / --no-jitter on a recipe config. Not through from_recipe: there None is "not given",
    so the switch-off could not be told apart."""
    if no_jitter:
        cfg.jitter = None
    elif jitter is not None:
        vals = parse_floats(jitter)
        if len(vals) != 4:
            raise typer.BadParameter(f"--jitter takes 4 numbers (brightness,contrast,saturation,hue), got {jitter!r}")
        cfg.jitter = vals
    return cfg


def _seam_progress(bar: Any, name: str) -> Any:
    """One bar for the training (its three losses) and one for the CAM evaluation after it."""
    tasks: dict[str, int] = {}

    def on_progress(p: Any) -> None:
        if p.phase not in tasks:
            tasks[p.phase] = bar.add_task(name if p.phase == "train" else "CAM eval", total=p.max_iter, status="")
        status = ""
        if p.phase == "train":
            lo = p.losses
            status = (f"ep {p.epoch + 1}/{p.epochs} loss {lo['loss']:.3f} (cls {lo['cls']:.3f} "
                      f"er {lo['er']:.3f} ecr {lo['ecr']:.3f}) {p.images_per_s:.1f} img/s")
        bar.update(tasks[p.phase], completed=p.iteration, status=status)

    return on_progress


def _print_eval(ev: dict[str, Any] | None) -> None:
    if ev:
        console.print(f"pseudo-label mIoU {ev['miou']:.2f}% (best threshold {ev['best_threshold']:.2f}, "
                      f"all-background {ev['all_background_miou']:.2f}%) on {ev['num_images']} images")
