"""`seam pipeline`: SEAM -> CAMs -> AffinityNet labels -> AffinityNet -> random walk -> DeepLab."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from seam.cli._app import app, config_command
from seam.cli._training import train_progress
from seam.cli._util import console, fail, progress_bar


def _config() -> type:
    from seam.training.pipeline import PipelineConfig

    return PipelineConfig


@config_command(app, "pipeline", _config)
def pipeline(given: dict[str, Any]) -> None:
    """The whole weakly supervised pipeline; each stage is skipped when its outputs exist and
    trainers resume from their checkpoints. Every training stage runs its recipe (release on VOC:
    the published settings) unless an option is given; the run prints each stage's settings and
    overrides first. Prints the mIoU after each stage when ground truth exists and writes
    everything to RUN_DIR/results.json."""
    from seam.training.data.datasets import DatasetError
    from seam.training.models.checkpoint import CheckpointError
    from seam.training.pipeline import PipelineConfig, run_pipeline
    from seam.training.trainers.run_dir import TrainingError

    cfg = PipelineConfig(**given)
    if cfg.crop is not None and cfg.crop % 8:
        fail(f"--crop must be a multiple of 8, got {cfg.crop}")
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
    console.print(f"results: {Path(cfg.out) / 'results.json'}")


def _hooks(bar: Any) -> Any:
    """The stages' log, training progress and per-image progress, all on one rich progress display."""
    from seam.training.pipeline import StageHooks

    def images(name: str, n: int):
        task = bar.add_task(name, total=n, status="")
        return lambda i: bar.update(task, advance=1, status=i)

    return StageHooks(log=lambda m: console.print(m, highlight=False),
                      train_progress=lambda name: train_progress(bar, name), image_progress=images)
