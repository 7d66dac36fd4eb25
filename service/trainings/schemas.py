"""Request and response models of the /trainings routes."""
from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from seam.modelrepo.trainings import NAME_PATTERN, Evaluation, Stage


class RecipeRequest(BaseModel):
    """Training settings over the stages' recipes (absent = the recipe's value)."""

    model_config = ConfigDict(extra="forbid")

    backbone: Literal["resnet38", "resnet38_small"] = Field("resnet38", description=(
        "resnet38 (the paper's) or resnet38_small (a small network for CPU trials)."))
    recipe: Literal["release", "tuned"] | None = None
    epochs: int | None = Field(None, ge=1, le=1000, description="Epochs of every training stage.")
    batch_size: int | None = Field(None, ge=1, le=256)
    lr: float | None = Field(None, gt=0, le=1.0)
    crop: int | None = Field(None, ge=32, le=1024, multiple_of=8, description="Training crop (a multiple of 8).")
    seed: int = Field(0, ge=0, le=2**31 - 1)


class TrainingOptions(BaseModel):
    """What every training request says, whatever its data source."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=NAME_PATTERN, description="Model name the trained version is published as "
                                                        "(NAME:<next version>).")
    classes: list[str] | None = Field(None, max_length=1000, description=(
        "Foreground class names, in order (default: the data's own, sorted)."))
    stages: Stage = Field("seam", description=(
        "seam (CAMs), seam+rw (+ AffinityNet random walk), pipeline (+ DeepLab), deeplab (DeepLab alone on "
        "the job's masks, from base_model)."))
    recipe: RecipeRequest = RecipeRequest()
    base_model: str | None = Field(None, max_length=200, description="NAME[:VERSION] to fine-tune from.")
    budget_s: float | None = Field(None, gt=0, description="Most seconds of training (SEAM_TRAINING_MAX_BUDGET_S).")
    promote: bool = Field(False, description=(
        "Promote the new version when its held-out mIoU is not below the promoted version's."))
    heldout_fraction: float = Field(0.2, ge=0.0, lt=1.0, description=(
        "Share of the images with ground truth (SegmentationClass/<id>.png) kept out of training and scored."))


class TrainingJsonRequest(TrainingOptions):
    """JSON body: a folder under SEAM_ALLOWED_ROOT, or a finished job (its images, labels and masks)."""

    folder: str | None = Field(None, max_length=4096, description=(
        "A folder under SEAM_ALLOWED_ROOT: images + labels.csv/json/tsv (or a VOC-like layout)."))
    job_id: str | None = Field(None, pattern=r"^[0-9a-f]{32}$", description=(
        "A finished job of yours: its images, with its labels (or the classes of its png masks)."))


class TrainingLinks(BaseModel):
    self: str
    log: str
    cancel: str
    promote: str


class TrainingPublic(BaseModel):
    id: str
    name: str | None
    stages: str | None
    source: str
    state: str
    cancel_requested: bool
    stage: str | None
    epoch: int | None
    epochs: int | None
    step: int | None
    steps: int | None
    loss: float | None
    eta_s: float | None
    elapsed_s: float
    budget_s: float | None
    evaluation: Evaluation | None
    error: str | None
    model: str | None = Field(None, description="NAME:VERSION of the published version.")
    version: int | None
    promoted: bool = Field(description="Whether the published version is the promoted one now.")
    promote_note: str | None
    attempts: int
    resumed: bool
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    links: TrainingLinks


class TrainingList(BaseModel):
    trainings: list[TrainingPublic]
