"""`seam train seam`: train SEAM as the authors' train_SEAM.py (single process, or DDP
under torchrun), save the authors'-format weights + sidecar, score pseudo labels."""
from __future__ import annotations

from typing import Any

from seam.cli import _training
from seam.cli._app import config_command, train_app
from seam.cli._util import console


def _config() -> type:
    from seam.training.trainers.seam import TrainConfig

    return TrainConfig


@config_command(train_app, "seam", _config)
def train_seam(given: dict[str, Any]) -> None:
    """Train SEAM: siamese rescale branch, classification + ER + ECR (OHEM) losses, PCM, frozen BN, poly lr. Writes \
RUN_DIR/seam_final.pth (authors' format) + .json.

    Default recipe: `release`. With --dataset voc (or a VOC layout found by --dataset auto) a run therefore trains \
exactly as the authors' published runs (SGD momentum 5e-4 from their optimiser's positional-argument slip, fp32, \
batch 8, 8 epochs, crop 448, lr 0.01), which is what produced the paper's numbers; other data gets it too, because \
`tuned` (momentum 0.9, AMP on CUDA) measured no better on the synthetic ablation (docs/training.md). Options you \
give override the recipe; the run prints the recipe and stores it in the sidecar."""
    from seam.training.data.datasets import DatasetError
    from seam.training.models.checkpoint import CheckpointError
    from seam.training.trainers.run_dir import TrainingError
    from seam.training.trainers.seam import TrainConfig, train
    from seam.training.trainers.state import SEAM_FINAL

    cfg = _training.recipe_config(TrainConfig, given, _training.dataset_recipe(given, "seam"))
    result = _training.train_stage(train, cfg, "SEAM", (DatasetError, CheckpointError, TrainingError,
                                                        FileNotFoundError), progress=_seam_progress)
    _training.print_weights(cfg.out, SEAM_FINAL)
    if _training.main_rank():
        _print_eval(result.get("metrics", {}).get("eval"))


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
