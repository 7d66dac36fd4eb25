"""`RunConfig`: the settings every trainer's run has (initial weights, the SGD schedule,
devices, checkpoints, stopping); `StageConfig` adds what AffinityNet and DeepLab share.
The SEAM, AffinityNet and DeepLab configs extend them with their data and losses; one
that wants another default redeclares the field (dataclasses keep the field's place and
take the new default)."""
from __future__ import annotations

from dataclasses import dataclass

from seam.training.models.registry import backbone_config
from seam.training.trainers.recipes import RecipeConfig

from seam.common.options import setting


@dataclass
class RunConfig(RecipeConfig):
    # the command-line help of each setting is its metadata (seam.common.options.setting)
    weights: str | None = setting(None, path=True, help=(
        "Initial weights: ImageNet .params, a state dict (authors' or ours), an earlier stage's checkpoint or a run "
        "dir."))  # None = random init
    backbone: str = setting("resnet38", help="resnet38 (the paper) or resnet38_small (CPU).")
    batch_size: int = setting(8, recipe=True, help="Global batch size (per GPU = batch / world size) (recipe: 8).")
    epochs: int = setting(8, recipe=True, help="Epochs (recipe: 8).")
    lr: float = setting(0.01, recipe=True, help="Base learning rate, new layers 10x (recipe: 0.01).")
    weight_decay: float = setting(5e-4, recipe=True, help="Weight decay on weights, not biases (recipe: 5e-4).")
    momentum: float = setting(0.9, recipe=True, help="SGD momentum (recipe: 0.9).")
    authors_momentum: bool = setting(False, help="Momentum 5e-4: what the release's optimiser actually used.")
    crop: int = setting(448, recipe=True, help="Square training crop (recipe: 448).")
    out: str = setting("runs/run", path=True, help="Run directory.")
    seed: int = setting(0, help="Random seed (data order, augmentation, init, dropout).")
    device: str | None = setting(None, help="torch device (default: cuda if available).")
    workers: int | None = setting(None, help="Data loader workers (default 0 on CPU, up to 8 on CUDA).")
    max_minutes: float | None = setting(None, help="Stop after this many minutes (checkpoint + weights saved).")
    amp: bool | None = setting(None, recipe=True, help="Mixed precision (recipe: release off, tuned on with CUDA).")
    deterministic: bool = setting(True, help="Deterministic algorithms where torch has them.")
    log_every: int = setting(10, min=1, clamp=True, help="Iterations per log.csv row.")
    resume: bool = setting(False, help="Continue from RUN_DIR/checkpoint.pth exactly.")
    stop_after: int | None = setting(None, hidden=True, help="Stop after N iterations (preemption drill).")
    bn_calibration: int | None = setting(None, help=(
        "Batches to calibrate frozen BN statistics (default 10 without --weights, else 0)."))

    def validate_schedule(self) -> None:
        if self.batch_size < 1 or self.epochs < 1:
            raise ValueError("batch size and epochs must be >= 1")
        if self.lr <= 0:
            raise ValueError(f"lr must be positive, got {self.lr}")
        backbone_config(self.backbone)


@dataclass
class StageConfig(RunConfig):
    """Settings shared by the AffinityNet and DeepLab trainers (saved in every checkpoint);
    the subclasses add their data, `recipe` and `STAGE`."""

    jitter: bool = setting(True, recipe=True, flag=None, off="--no-jitter", help="No colour jitter.")
    out: str = setting("runs/affinity", path=True, help="Run directory.")

    SCHEDULE_FIELDS = ("backbone", "batch_size", "epochs", "lr", "weight_decay", "momentum", "authors_momentum",
                       "crop", "jitter", "seed")

    def validate(self) -> None:
        self.validate_schedule()
