"""`seam pipeline`: SEAM -> CAMs -> AffinityNet labels -> AffinityNet -> random walk -> DeepLab."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from seam.cli import _train_options as opt
from seam.cli._training import path_str, train_progress
from seam.cli._util import console, fail, parse_floats, progress_bar

Out = Annotated[Path, typer.Option("--out", help="Run directory (one sub-directory per stage, results.json).")]
Weights = Annotated[Path | None, typer.Option(
    help="ImageNet weights for SEAM (and AffinityNet / DeepLab, else they start from SEAM).")]
Dataset = Annotated[str, typer.Option(help="voc | folder | synth | auto.")]
TrainList = Annotated[Path | None, typer.Option(help="Training image list (default: the data set's).")]
Labels = Annotated[Path | None, typer.Option(help="Image-level labels (default: the data set's).")]
EvalList = Annotated[Path | None, typer.Option(
    help="DeepLab evaluation list (default ImageSets/Segmentation/val.txt).")]
Batch = Annotated[int | None, typer.Option(
    help="Global batch size of every training stage (recipe: SEAM / AffinityNet 8; DeepLab release 10, tuned 8).")]
Crop = Annotated[int | None, typer.Option(help="Training crop of every stage, a multiple of 8 (recipe: 448).")]
SeamEpochs = Annotated[int | None, typer.Option(help="SEAM epochs (recipe: 8).")]
AffEpochs = Annotated[int | None, typer.Option(help="AffinityNet epochs (recipe: 8).")]
DeeplabEpochs = Annotated[int | None, typer.Option(
    help="DeepLab epochs, instead of the recipe's length (recipe: release 20000 iterations, tuned 20 epochs).")]
CamScales = Annotated[str, typer.Option(help="CAM inference scales.")]
NoCrf = Annotated[bool, typer.Option("--no-crf", help="AffinityNet labels without the dense CRF.")]
Alpha = Annotated[float, typer.Option(help="Random walk: background power.")]
Beta = Annotated[float, typer.Option(help="Random walk: affinity power.")]
Logt = Annotated[int, typer.Option(help="Random walk: 2^logt steps.")]
SegScales = Annotated[str, typer.Option(help="DeepLab test scales (the authors' test protocol).")]
Recipe = Annotated[str | None, typer.Option(
    help="Training recipe of every stage: release (the published runs: SEAM and AffinityNet batch 8, 8 epochs; "
    "DeepLab batch 10, 20000 iterations, BN statistics per 5 images; fp32) or tuned. Default: release, except "
    "DeepLab off VOC data (tuned). Options given override it.")]
SegCrf = Annotated[bool, typer.Option(
    "--seg-crf/--no-seg-crf", help="Dense CRF on the DeepLab predictions: the authors' test protocol (1 iteration, "
    "bilateral sxy 32).")]
Workers = Annotated[int | None, typer.Option(help="Data loader workers.")]


def pipeline(
    data: opt.Data,
    out: Out,
    backbone: opt.Backbone = "resnet38",
    weights: Weights = None,
    dataset: Dataset = "auto",
    train_list: TrainList = None,
    labels: Labels = None,
    eval_list: EvalList = None,
    batch_size: Batch = None,
    crop: Crop = None,
    seam_epochs: SeamEpochs = None,
    aff_epochs: AffEpochs = None,
    deeplab_epochs: DeeplabEpochs = None,
    cam_scales: CamScales = "0.5,1.0,1.5,2.0",
    no_crf: NoCrf = False,
    alpha: Alpha = 6.0,
    beta: Beta = 8.0,
    logt: Logt = 6,
    seg_scales: SegScales = "0.5,0.75,1.0,1.25,1.5,1.75",
    recipe: Recipe = None,
    seg_crf: SegCrf = True,
    seed: opt.Seed = 0,
    device: opt.Device = None,
    workers: Workers = None,
    amp: opt.RAmp = None,
) -> None:
    """The whole weakly supervised pipeline; each stage is skipped when its outputs exist and
    trainers resume from their checkpoints. Every training stage runs its recipe (release on VOC:
    the published settings) unless an option is given; the run prints each stage's settings and
    overrides first. Prints the mIoU after each stage when ground truth exists and writes
    everything to RUN_DIR/results.json."""
    from seam.training.data.datasets import DatasetError
    from seam.training.models.checkpoint import CheckpointError
    from seam.training.pipeline import PipelineConfig, RandomWalkConfig, run_pipeline
    from seam.training.trainers.trainer import TrainingError

    cfg = PipelineConfig(
        data=str(data), out=str(out), dataset=dataset, train_list=path_str(train_list), labels=path_str(labels),
        eval_list=path_str(eval_list), weights=path_str(weights), backbone=backbone, batch_size=batch_size,
        crop=crop, seam_epochs=seam_epochs, aff_epochs=aff_epochs, deeplab_epochs=deeplab_epochs,
        cam_scales=parse_floats(cam_scales), crf=not no_crf,
        rw=RandomWalkConfig(alpha=alpha, beta=beta, logt=logt), seg_scales=parse_floats(seg_scales),
        seg_crf=seg_crf, seed=seed, device=device, workers=workers, amp=amp, recipe=recipe)
    if crop is not None and crop % 8:
        fail(f"--crop must be a multiple of 8, got {crop}")
    try:
        with progress_bar() as bar:
            res = run_pipeline(cfg, _hooks(bar))
    except (DatasetError, CheckpointError, TrainingError, FileNotFoundError, ValueError, RuntimeError) as exc:
        fail(str(exc))
        return
    if res.get("table"):
        console.print("\nmIoU (%)            stage                          split")
        for row in res["table"]:
            console.print(f"  {row['miou']:6.2f}   {row['stage']:<36} {row['split']}", highlight=False)
    console.print(f"results: {out / 'results.json'}")


def _hooks(bar: Any) -> Any:
    """The stages' log, training progress and per-image progress, all on one rich progress display."""
    from seam.training.pipeline import StageHooks

    def images(name: str, n: int):
        task = bar.add_task(name, total=n, status="")
        return lambda i: bar.update(task, advance=1, status=i)

    return StageHooks(log=lambda m: console.print(m, highlight=False),
                      train_progress=lambda name: train_progress(bar, name), image_progress=images)
