"""`seam train seam`: train SEAM as the authors' train_SEAM.py (single process, or DDP
under torchrun), save the authors'-format weights + sidecar, score pseudo labels."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from seam.cli import _train_options as opt
from seam.cli._util import console, fail, parse_floats, progress_bar


def _pair(text: str | None, name: str) -> tuple[int, int] | None:
    if text is None:
        return None
    vals = parse_floats(text)
    if len(vals) != 2:
        raise typer.BadParameter(f"{name} takes MIN,MAX, got {text!r}")
    return int(vals[0]), int(vals[1])


def train_seam(
    data: Annotated[
        Path, typer.Option("--data", help="Data root: VOC (JPEGImages/), a synth set, or an image folder.")
    ],
    dataset: Annotated[str, typer.Option(help="voc | folder | synth | auto (detected from the layout).")] = "auto",
    train_list: Annotated[
        Path | None,
        typer.Option(help="Image list (ids or VOC-style paths). VOC default: the authors' train_aug.txt."),
    ] = None,
    labels: Annotated[
        Path | None,
        typer.Option(help="Image-level labels: cls_labels.npy, JSON {image: [classes]} or CSV image,classes."),
    ] = None,
    classes: Annotated[
        str | None, typer.Option(help="Folder sets: class names, comma-separated or a classes.txt path.")
    ] = None,
    weights: Annotated[
        Path | None,
        typer.Option(help="Initial weights: ImageNet .params, a state dict (authors' or ours) or a run dir."),
    ] = None,
    backbone: Annotated[str, typer.Option(help="resnet38 (the paper) or resnet38_small (CPU).")] = "resnet38",
    recipe: opt.Recipe = None,
    batch_size: opt.RBatch = None,
    epochs: opt.REpochs = None,
    lr: opt.RLr = None,
    weight_decay: opt.RWeightDecay = None,
    momentum: opt.RMomentum = None,
    authors_momentum: opt.AuthorsMomentum = False,
    crop: opt.RCrop = None,
    resize_range: Annotated[
        str | None, typer.Option(help="Random long side MIN,MAX (default 448,768 scaled by crop/448).")
    ] = None,
    jitter: Annotated[
        str | None, typer.Option(help="ColorJitter brightness,contrast,saturation,hue [recipe: 0.3,0.3,0.3,0.1].")
    ] = None,
    no_jitter: opt.NoJitter = False,
    out: opt.Out = Path("runs/seam"),
    resume: opt.Resume = False,
    seed: Annotated[int, typer.Option(help="Random seed (data order, augmentation, init, dropout).")] = 0,
    device: opt.Device = None,
    workers: opt.Workers = None,
    threads: Annotated[int | None, typer.Option(help="torch CPU threads (default: torch's choice, all cores).")] = None,
    max_minutes: opt.MaxMinutes = None,
    amp: opt.RAmp = None,
    no_er: Annotated[bool, typer.Option("--no-er", help="Table 1: no equivariant regularisation.")] = False,
    no_pcm: Annotated[
        bool, typer.Option("--no-pcm", help="Table 1: no PCM / ECR (with --no-er: the CAM baseline).")
    ] = False,
    no_ohem: Annotated[bool, typer.Option("--no-ohem", help="Table 1: plain mean instead of OHEM on ECR.")] = False,
    transform: Annotated[
        str, typer.Option(help="Table 3: siamese transform(s), e.g. rescale or rescale,flip (rotate, translate).")
    ] = "rescale",
    siamese_scale: Annotated[
        float | None, typer.Option(help="Rescale factor of the second branch [recipe: 0.3].")
    ] = None,
    eval_list: Annotated[
        Path | None, typer.Option(help="Images to score pseudo labels on (default: the training list).")
    ] = None,
    eval_scales: Annotated[str, typer.Option(help="CAM scales for the evaluation.")] = "0.5,1.0,1.5,2.0",
    no_eval: Annotated[bool, typer.Option("--no-eval", help="Skip the pseudo-label evaluation.")] = False,
    save_cams: Annotated[bool, typer.Option("--save-cams", help="Keep the evaluation CAMs in RUN_DIR/cams.")] = False,
    deterministic: opt.Deterministic = True,
    bn_calibration: Annotated[
        int | None,
        typer.Option(help="Batches to calibrate frozen BN statistics (default 10 without --weights, else 0)."),
    ] = None,
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
    from training.data.datasets import DatasetError, detect_dataset_kind
    from training.engine.recipes import default_recipe
    from training.engine.siamese import parse_transforms
    from training.engine.trainer import Progress, TrainConfig, TrainingError, train
    from training.models.checkpoint import CheckpointError

    try:
        if recipe is None:
            recipe = default_recipe(dataset if dataset != "auto" else detect_dataset_kind(data))
        cfg = TrainConfig.from_recipe(
            recipe,
            data=str(data), dataset=dataset, train_list=opt.path_str(train_list), labels=opt.path_str(labels),
            classes=classes,
            weights=opt.path_str(weights), backbone=backbone, batch_size=batch_size, epochs=epochs, lr=lr,
            weight_decay=weight_decay, momentum=momentum, authors_momentum=authors_momentum, crop=crop,
            resize_long=_pair(resize_range, "--resize-range"), out=str(out), seed=seed,
            device=device, workers=workers, threads=threads, max_minutes=max_minutes, amp=amp,
            er=not no_er, pcm=not no_pcm,
            ohem=not no_ohem, transforms=parse_transforms(transform), siamese_scale=siamese_scale,
            evaluate=not no_eval, eval_list=opt.path_str(eval_list), eval_scales=parse_floats(eval_scales),
            save_cams=save_cams, deterministic=deterministic, log_every=max(1, log_every), resume=resume,
            bn_calibration=bn_calibration,
            stop_after=stop_after,
        )
        if no_jitter:  # None is "not given" to the recipe merge, so the switch-off goes in afterwards
            cfg.jitter = None
        elif jitter is not None:
            cfg.jitter = _jitter(jitter)
        cfg.validate()
    except ValueError as exc:
        fail(str(exc))
        return
    main_rank = os.environ.get("RANK", "0") == "0"
    try:
        if not main_rank:
            result = train(cfg)
            return
        with progress_bar() as bar:
            tasks: dict[str, int] = {}

            def on_progress(p: Progress) -> None:
                if p.phase not in tasks:
                    tasks[p.phase] = bar.add_task("SEAM" if p.phase == "train" else "CAM eval",
                                                  total=p.max_iter, status="")
                if p.phase == "train":
                    lo = p.losses
                    status = (f"ep {p.epoch + 1}/{p.epochs} loss {lo['loss']:.3f} (cls {lo['cls']:.3f} "
                              f"er {lo['er']:.3f} ecr {lo['ecr']:.3f}) {p.images_per_s:.1f} img/s")
                else:
                    status = ""
                bar.update(tasks[p.phase], completed=p.iteration, status=status)

            result = train(cfg, on_progress=on_progress, log=lambda m: console.print(m, highlight=False))
    except (DatasetError, CheckpointError, TrainingError, FileNotFoundError) as exc:
        fail(str(exc))
        return
    ev = result.get("metrics", {}).get("eval")
    console.print(f"weights: {Path(cfg.out) / 'seam_final.pth'}  sidecar: {Path(cfg.out) / 'seam_final.json'}")
    if ev:
        console.print(f"pseudo-label mIoU {ev['miou']:.2f}% (best threshold {ev['best_threshold']:.2f}, "
                      f"all-background {ev['all_background_miou']:.2f}%) on {ev['num_images']} images")


def _jitter(text: str) -> tuple[float, float, float, float]:
    vals = parse_floats(text)
    if len(vals) != 4:
        raise typer.BadParameter(f"--jitter takes 4 numbers (brightness,contrast,saturation,hue), got {text!r}")
    return vals  # type: ignore[return-value]

