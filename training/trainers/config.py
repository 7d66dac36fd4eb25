"""`RunConfig`: the settings every trainer's run has (initial weights, the SGD schedule,
devices, checkpoints, stopping). The SEAM, AffinityNet and DeepLab configs extend it with
their data and losses; one that wants another default redeclares the field (dataclasses
keep the field's place and take the new default)."""
from __future__ import annotations

from dataclasses import dataclass

from seam.training.models.registry import backbone_config
from seam.training.trainers.recipes import RecipeConfig


@dataclass
class RunConfig(RecipeConfig):
    weights: str | None = None  # ImageNet .params, a state dict (authors' or ours), or a run dir; None = random init
    backbone: str = "resnet38"
    batch_size: int = 8  # global batch (per rank = batch / world size)
    epochs: int = 8
    lr: float = 0.01
    weight_decay: float = 5e-4
    momentum: float = 0.9
    authors_momentum: bool = False  # True: momentum 5e-4, what the release really ran with
    crop: int = 448
    out: str = "runs/run"
    seed: int = 0
    device: str | None = None  # None: cuda if available
    workers: int | None = None  # None: 0 on CPU, min(8, cores) on CUDA
    max_minutes: float | None = None  # stop (checkpoint + final weights) after this wall time
    amp: bool | None = None  # None: on for CUDA
    deterministic: bool = True
    log_every: int = 10
    resume: bool = False
    stop_after: int | None = None  # stop after this many iterations of this invocation (preemption drill)
    bn_calibration: int | None = None  # batches to calibrate frozen BN statistics; None: 10 without --weights, else 0

    def validate_schedule(self) -> None:
        if self.batch_size < 1 or self.epochs < 1:
            raise ValueError("batch size and epochs must be >= 1")
        if self.lr <= 0:
            raise ValueError(f"lr must be positive, got {self.lr}")
        backbone_config(self.backbone)
