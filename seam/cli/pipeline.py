"""`seam pipeline`: SEAM -> CAMs -> AffinityNet labels -> AffinityNet -> random walk -> DeepLab."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from seam.cli._util import console, fail, parse_floats, progress_bar


def pipeline(
    data: Annotated[Path, typer.Option("--data", help="Data root: VOC (JPEGImages/), a synth set, or an image "
                                                      "folder.")],
    out: Annotated[Path, typer.Option("--out", help="Run directory (one sub-directory per stage, results.json).")],
    backbone: Annotated[str, typer.Option(help="resnet38 (the paper) or resnet38_small (CPU).")] = "resnet38",
    weights: Annotated[Path | None, typer.Option(help="ImageNet weights for SEAM (and AffinityNet / DeepLab, else they "
                                                      "start from SEAM).")] = None,
    dataset: Annotated[str, typer.Option(help="voc | folder | synth | auto.")] = "auto",
    train_list: Annotated[Path | None, typer.Option(help="Training image list (default: the data set's).")] = None,
    labels: Annotated[Path | None, typer.Option(help="Image-level labels (default: the data set's).")] = None,
    eval_list: Annotated[Path | None, typer.Option(help="DeepLab evaluation list (default "
                                                        "ImageSets/Segmentation/val.txt).")] = None,
    batch_size: Annotated[int, typer.Option(help="Global batch size of every training stage.")] = 8,
    crop: Annotated[int, typer.Option(help="Training crop of every stage (multiple of 8).")] = 448,
    seam_epochs: Annotated[int, typer.Option(help="SEAM epochs.")] = 8,
    aff_epochs: Annotated[int, typer.Option(help="AffinityNet epochs.")] = 8,
    deeplab_epochs: Annotated[int, typer.Option(help="DeepLab epochs.")] = 20,
    cam_scales: Annotated[str, typer.Option(help="CAM inference scales.")] = "0.5,1.0,1.5,2.0",
    no_crf: Annotated[bool, typer.Option("--no-crf", help="AffinityNet labels without the dense CRF.")] = False,
    alpha: Annotated[float, typer.Option(help="Random walk: background power.")] = 6.0,
    beta: Annotated[float, typer.Option(help="Random walk: affinity power.")] = 8.0,
    logt: Annotated[int, typer.Option(help="Random walk: 2^logt steps.")] = 6,
    seg_scales: Annotated[str, typer.Option(help="DeepLab test scales (the authors' test "
                                                 "protocol).")] = "0.5,0.75,1.0,1.25,1.5,1.75",
    recipe: Annotated[str | None, typer.Option(help="Training recipe of every stage: release (the published runs) or "
                                                    "tuned. Default: release for VOC data, tuned otherwise.")] = None,
    seg_crf: Annotated[bool, typer.Option("--seg-crf", help="Dense CRF on the DeepLab predictions.")] = False,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    device: Annotated[str | None, typer.Option(help="torch device (default: cuda if available).")] = None,
    workers: Annotated[int | None, typer.Option(help="Data loader workers.")] = None,
    amp: Annotated[bool | None, typer.Option("--amp/--no-amp", help="Mixed precision (default: on with CUDA).")] = None,
) -> None:
    """The whole weakly supervised pipeline; each stage is skipped when its outputs exist and
    trainers resume from their checkpoints. Prints the mIoU after each stage when ground truth
    exists and writes everything to RUN_DIR/results.json."""
    from training.data.datasets import DatasetError
    from training.engine.trainer import TrainingError
    from training.models.checkpoint import CheckpointError
    from training.pipeline import PipelineConfig, RandomWalkConfig, StageHooks, run_pipeline

    cfg = PipelineConfig(
        data=str(data), out=str(out), dataset=dataset, train_list=_s(train_list), labels=_s(labels),
        eval_list=_s(eval_list), weights=_s(weights), backbone=backbone, batch_size=batch_size, crop=crop,
        seam_epochs=seam_epochs, aff_epochs=aff_epochs, deeplab_epochs=deeplab_epochs,
        cam_scales=parse_floats(cam_scales), crf=not no_crf,
        rw=RandomWalkConfig(alpha=alpha, beta=beta, logt=logt), seg_scales=parse_floats(seg_scales),
        seg_crf=seg_crf, seed=seed, device=device, workers=workers, amp=amp, recipe=recipe)
    if crop % 8:
        fail(f"--crop must be a multiple of 8, got {crop}")
    try:
        with progress_bar() as bar:
            from seam.cli._train_options import train_progress

            def images(name: str, n: int):
                task = bar.add_task(name, total=n, status="")
                return lambda i: bar.update(task, advance=1, status=i)

            hooks = StageHooks(log=lambda m: console.print(m, highlight=False),
                               train_progress=lambda name: train_progress(bar, name), image_progress=images)
            res = run_pipeline(cfg, hooks)
    except (DatasetError, CheckpointError, TrainingError, FileNotFoundError, ValueError, RuntimeError) as exc:
        fail(str(exc))
        return
    if res.get("table"):
        console.print("\nmIoU (%)            stage                          split")
        for row in res["table"]:
            console.print(f"  {row['miou']:6.2f}   {row['stage']:<36} {row['split']}", highlight=False)
    console.print(f"results: {out / 'results.json'}")


def _s(p: Path | None) -> str | None:
    return None if p is None else str(p)
