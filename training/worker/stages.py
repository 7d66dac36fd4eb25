"""The stages a training asks for, run by the pipeline (`seam.training.pipeline.PipelineRun`)
in the training's run directory: each trainer resumes from its checkpoint.pth when a killed
attempt left one, each per-image stage skips what is written. The hooks report every step to
the training's status and stop the run (an exception out of the trainer's progress callback)
when a cancel is asked or the time budget is spent."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from seam.training.pipeline import PipelineConfig, PipelineRun, StageHooks
from seam.training.worker.data import PreparedData

from seam.modelrepo.trainings import TrainingSpec

# the pipeline's stages each training kind runs (names of PipelineRun.stages()), and the kinds it exports
STAGE_PLAN: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "seam": (("seam",), ("seam",)),
    "seam+rw": (("seam", "cams", "aff_labels", "affinity"), ("seam", "affinity")),
    "pipeline": (("seam", "cams", "aff_labels", "affinity", "rw", "deeplab"), ("seam", "affinity", "deeplab")),
    "deeplab": (("deeplab",), ("deeplab",)),
}
TITLES = {"seam": "SEAM", "cams": "CAMs", "aff_labels": "AffinityNet labels", "affinity": "AffinityNet",
          "rw": "random walk", "deeplab": "DeepLab"}


class Stopped(Exception):  # noqa: N818 - a stop, not an error of the code
    """Raised from a progress hook: cancel asked (`reason` "cancelled") or budget spent ("budget")."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass
class StageReport:
    """What the hooks tell the runner: the stage, and a training step (None between steps)."""

    stage: str
    epoch: int | None = None
    epochs: int | None = None
    step: int | None = None
    steps: int | None = None
    loss: float | None = None
    images_per_s: float | None = None


def pipeline_config(spec: TrainingSpec, data: PreparedData, run_dir: Path, weights: str | None) -> PipelineConfig:
    r = spec.recipe
    given = {"batch_size": r.batch_size, "crop": r.crop, "recipe": r.recipe, "amp": None}
    ep, lr = r.epochs, r.lr
    return PipelineConfig(
        data=str(data.root), out=str(run_dir), dataset="folder", train_list=str(data.train_list),
        eval_list=str(data.train_list.with_name("heldout.txt")) if data.heldout else None,
        weights=weights, backbone=r.backbone, seam_epochs=ep, seam_lr=lr, aff_epochs=ep, aff_lr=lr,
        deeplab_epochs=ep, deeplab_lr=lr, cam_scales=tuple(r.cam_scales), crf=r.crf, seed=r.seed,
        device=r.device, workers=r.workers, seg_crf=False, **given)


def run_stages(spec: TrainingSpec, data: PreparedData, run_dir: Path, weights: str | None,
               report: Callable[[StageReport], None], log: Callable[[str], None]) -> dict[str, Path]:
    """Run the plan's stages; {kind: final weights} of the kinds to export. `report` may raise Stopped."""
    names, kinds = STAGE_PLAN[spec.stages]
    current = {"stage": TITLES[names[0]]}

    def train_progress(title: str) -> Callable[[Any], None]:
        def on(p: Any) -> None:
            report(StageReport(title, p.epoch + 1, p.epochs, p.iteration, p.max_iter,
                               float(p.losses.get("loss", 0.0)), p.images_per_s))
        return on

    def image_progress(title: str, n: int) -> Callable[[str], None]:
        done = [0]

        def on(_image_id: str) -> None:
            done[0] += 1
            report(StageReport(current["stage"], step=done[0], steps=n))
        return on

    run = PipelineRun(pipeline_config(spec, data, run_dir, weights),
                      StageHooks(log=log, train_progress=train_progress, image_progress=image_progress))
    if spec.pseudo_labels_dir:  # DeepLab learns the given labels instead of the random walk's
        run.rw_dir = Path(spec.pseudo_labels_dir)
        names = tuple(n for n in names if n != "rw")
    log(run.describe())
    table = {name: stage for name, stage, _ in run.stages()}
    for name in names:
        current["stage"] = TITLES[name]
        report(StageReport(TITLES[name]))
        run.record(name, table[name])
    return {k: run.finals[k] for k in kinds}
