"""The training-job contract between the service (which accepts and watches trainings) and the
trainer (which runs them): the spec, the status file and the files of a training's directory.

    <data_dir>/trainings/<id>/
      spec.json      TrainingSpec: written by the service before the training is queued, read by the trainer
      owner.json     who submitted it (the service's; the trainer never reads it)
      status.json    TrainingStatus: written by the trainer (atomic replace), read by the service
      log.txt        appended by the trainer (one line per event)
      cancel         present = cancel asked; the trainer polls it between steps
      heartbeat      the time a trainer last said it is alive (every few seconds while it holds the training)
      requeued       the time the service last sent the training again, its trainer's heartbeat gone
      promote        present = promotion asked after the fact (the service writes it; see service/trainings)
      data/          an uploaded archive, extracted by the service with its archive rules
      run/ split/ export/   the trainer's: the pipeline's run directory, the held-out split, the ONNX exports

Both sides import this module (torch-free), so the spec and the status have one definition.
"""
from __future__ import annotations

import json
import os
import time
import uuid
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

SPEC_FILE = "spec.json"
STATUS_FILE = "status.json"
LOG_FILE = "log.txt"
CANCEL_FILE = "cancel"
HEARTBEAT_FILE = "heartbeat"
REQUEUED_FILE = "requeued"
TRAINING_TASK = "seam.train"  # the Celery task name the service sends and `seam trainer` runs
STAGES = ("seam", "seam+rw", "pipeline", "deeplab")
Stage = Literal["seam", "seam+rw", "pipeline", "deeplab"]
State = Literal["queued", "running", "succeeded", "failed", "cancelled"]
TERMINAL_STATES = ("succeeded", "failed", "cancelled")
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
MAX_LOG_LINE = 2000


def training_queue(prefix: str) -> str:
    """The Celery queue of the trainers: `<prefix>-training`."""
    return f"{prefix}-training"


def trainings_dir(data_dir: str | Path) -> Path:
    """Where the trainings live under the (shared) data directory."""
    return Path(data_dir) / "trainings"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DataSpec(_Strict):
    """Where the images and their image-level labels are (already on the trainer's disk).

    `root`: a folder in one of the data set table's layouts (VOC-like: JPEGImages/ + lists +
    cls_labels.npy, or a synth set; or images + labels.csv/json/tsv, the images in root,
    root/images/ or root/JPEGImages/). `labels`: the label file when it is not in root.
    Ground truth, when there, is root/SegmentationClass/<image id>.png (label PNGs): the held-out
    split is drawn from those images and scored."""

    root: str
    labels: str | None = None
    source: Literal["archive", "folder", "job", "dir"] = "dir"
    job_id: str | None = None  # source "job": the pseudo-label job it came from


class Recipe(_Strict):
    """Training settings over the stages' recipes (None = the recipe's value)."""

    backbone: str = "resnet38"
    recipe: Literal["release", "tuned"] | None = None
    epochs: int | None = Field(None, ge=1, le=1000, description="Epochs of every training stage.")
    batch_size: int | None = Field(None, ge=1, le=256)
    lr: float | None = Field(None, gt=0, le=1.0, description="Base learning rate of every training stage.")
    crop: int | None = Field(None, ge=32, le=1024, multiple_of=8)
    seed: int = Field(0, ge=0)
    cam_scales: tuple[float, ...] = (1.0,)  # CAMs for AffinityNet labels: one scale keeps trainings short
    crf: bool = False  # the dense CRF of the AffinityNet labels (needs pydensecrf2)
    device: str | None = None
    workers: int | None = Field(None, ge=0, le=16)


class TrainingSpec(_Strict):
    """One training: data, classes, stages, recipe, base model, budget, the model to publish as."""

    name: str = Field(pattern=NAME_PATTERN, description="Model name the trained version is published as.")
    data: DataSpec
    classes: list[str] | None = Field(None, description=(
        "Foreground class names (no background); default: the data set's own."))
    stages: Stage = "seam"
    recipe: Recipe = Recipe()
    base_model: str | None = Field(None, description="NAME[:VERSION] to fine-tune from (its checkpoint).")
    pseudo_labels_dir: str | None = Field(None, description=(
        "Per-image label PNGs (<image id>.png) that replace the random-walk pseudo labels (stages "
        "pipeline/deeplab: DeepLab trains on them; the corrections loop)."))
    budget_s: float | None = Field(None, gt=0, description="Most seconds of training (all restarts together).")
    promote: bool = Field(False, description=(
        "Promote the new version when its held-out evaluation is not worse than the promoted version's."))
    heldout_fraction: float = Field(0.2, ge=0.0, lt=1.0, description=(
        "Share of the images with ground truth kept out of training and scored."))
    max_images: int = Field(5000, ge=1, description="Refuse data sets with more images.")
    max_disk_bytes: int = Field(20 * 1024**3, ge=1, description="Refuse when the training dir outgrows this.")
    models_dir: str | None = Field(None, description="Model repository (default: the trainer's SEAM_MODELS_DIR).")

    @field_validator("classes")
    @classmethod
    def _classes(cls, v: list[str] | None) -> list[str] | None:
        if v is None:
            return None
        v = [c.strip() for c in v if c.strip()]
        if not v or len(set(v)) != len(v) or "background" in v:
            raise ValueError("classes: distinct foreground names (no 'background'), at least one")
        return v


class Evaluation(BaseModel):
    """mIoU (%) on the held-out split: the new version's and the promoted one's (same images)."""

    metric: str = "miou"
    split: list[str] = Field(default_factory=list)
    new: float | None = None
    promoted: float | None = None
    promoted_ref: str | None = None
    comparable: bool = False
    note: str | None = None


class TrainingStatus(BaseModel):
    """status.json: what `GET /trainings/{id}` shows."""

    model_config = ConfigDict(extra="ignore")

    state: State = "queued"
    stage: str | None = None
    epoch: int | None = None
    epochs: int | None = None
    step: int | None = None
    steps: int | None = None
    loss: float | None = None
    eta_s: float | None = None
    elapsed_s: float = 0.0  # training seconds over every attempt (what the budget counts)
    evaluation: Evaluation | None = None
    error: str | None = None
    model: str | None = None
    version: int | None = None
    promoted: bool = False
    promote_note: str | None = None
    attempts: int = 0
    pid: int | None = None  # the process running the current attempt (a test kills it to drill a resume)
    resumed: bool = False  # the last attempt continued from a checkpoint
    checkpoint: str | None = None  # where the fine-tunable weights of the version are kept
    updated_at: float = Field(default_factory=time.time)
    started_at: float | None = None
    finished_at: float | None = None

    @property
    def terminal(self) -> bool:
        return self.state in TERMINAL_STATES


class TrainingResult(BaseModel):
    """What `run_training` returns."""

    state: State
    model: str | None = None
    version: int | None = None
    promoted: bool = False
    evaluation: Evaluation | None = None
    error: str | None = None
    seconds: float = 0.0


# ----------------------------------------------------------------------------- files


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}")
    tmp.write_text(text)
    os.replace(tmp, path)  # readers see the old or the new file, never half of one


def write_spec(workdir: Path, spec: TrainingSpec) -> None:
    _atomic_write(Path(workdir) / SPEC_FILE, spec.model_dump_json(indent=2) + "\n")


def read_spec(workdir: Path) -> TrainingSpec:
    """The spec; ValueError when missing or invalid."""
    path = Path(workdir) / SPEC_FILE
    try:
        return TrainingSpec.model_validate_json(path.read_bytes())
    except OSError as exc:
        raise ValueError(f"{path}: {exc.strerror or exc}") from exc
    except ValidationError as exc:
        raise ValueError(f"{path}: invalid training spec: {exc}") from exc


def write_status(workdir: Path, status: TrainingStatus) -> None:
    status.updated_at = time.time()
    _atomic_write(Path(workdir) / STATUS_FILE, status.model_dump_json(indent=1) + "\n")


def read_status(workdir: Path) -> TrainingStatus | None:
    """The status, or None when there is none yet (or it cannot be read: never a crash)."""
    try:
        return TrainingStatus.model_validate_json((Path(workdir) / STATUS_FILE).read_bytes())
    except (OSError, ValidationError, ValueError):
        return None


def append_log(workdir: Path, line: str) -> None:
    """One timestamped line on log.txt (a single O_APPEND write: concurrent writers do not interleave)."""
    text = line.replace("\n", " ")[:MAX_LOG_LINE]
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    fd = os.open(Path(workdir) / LOG_FILE, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, f"{stamp} {text}\n".encode())
    finally:
        os.close(fd)


def write_time(workdir: Path, name: str, at: float | None = None) -> None:
    """A time file (HEARTBEAT_FILE, REQUEUED_FILE): the writer's clock, so a reader on another
    host compares it with its own (clocks a few seconds apart only shift the staleness check)."""
    _atomic_write(Path(workdir) / name, f"{time.time() if at is None else at:.3f}\n")


def read_time(workdir: Path, name: str) -> float | None:
    try:
        return float((Path(workdir) / name).read_text())
    except (OSError, ValueError):
        return None


def trainer_gone(workdir: Path, stale_s: float, now: float | None = None) -> bool:
    """Whether a running training's trainer has stopped beating: its heartbeat older than
    `stale_s`, and no resend since that beat (a resent training nobody took yet is not sent
    again; a trainer that takes it beats, and dies, anew)."""
    beat = read_time(workdir, HEARTBEAT_FILE)
    if beat is None:
        return False  # a trainer from before heartbeats, or one that has not begun: not judged
    now = time.time() if now is None else now
    resent = read_time(workdir, REQUEUED_FILE)
    return now - beat > stale_s and (resent is None or resent < beat)


def cancel_requested(workdir: Path) -> bool:
    return (Path(workdir) / CANCEL_FILE).exists()


def request_cancel(workdir: Path) -> None:
    (Path(workdir) / CANCEL_FILE).write_text(f"{time.time()}\n")


def status_dict(status: TrainingStatus) -> dict[str, Any]:
    return json.loads(status.model_dump_json())
