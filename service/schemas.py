"""Request and response models (the OpenAPI schema is generated from these)."""
from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

MethodName = Literal["cam", "pcm", "rw", "deeplab"]
OutputKind = Literal["png", "npz", "coco", "overlay", "labelstudio", "cvat"]
# Early clients asked for the CAM archive as "npy"; it always was an .npz.
OUTPUT_ALIASES = {"npy": "npz"}
JobState = Literal["queued", "running", "succeeded", "failed", "cancelled"]


class ErrorDetail(BaseModel):
    code: str = Field(description="Machine-readable error code, e.g. unknown_class, too_large.")
    message: str = Field(description="What was wrong, for humans.")
    details: list[dict] | None = None


class ErrorResponse(BaseModel):
    error: ErrorDetail


class Health(BaseModel):
    status: Literal["ok"] = "ok"


class Check(BaseModel):
    ok: bool
    detail: str | None = None


class Readiness(BaseModel):
    ready: bool
    mode: Literal["embedded", "celery"]
    checks: dict[str, Check]
    error: ErrorDetail | None = None


class ModelPublic(BaseModel):
    name: str
    kind: str
    backbone: str
    classes: list[str]
    provider: str
    description: str | None = Field(None, description="What the model knows (its manifest's description).")


class ModelsResponse(BaseModel):
    models: list[ModelPublic]
    classes: list[str] = Field(description="Foreground classes; label value = index + 1, 0 = background.")
    methods: list[str] = Field(description="Available methods, best first (the default is the first).")
    default_method: str | None
    description: str | None = Field(None, description=(
        "What the segmenting model knows (its domain): an image from outside it still gets the closest of its "
        "classes."))
    class_threshold: float | None = Field(None, description=(
        "Without labels, a class is predicted present when its score reaches this (and its map is not all zero)."))
    default_threshold: float | None = Field(None, description="The model's default background threshold.")


class Rle(BaseModel):
    size: list[int] = Field(description="[height, width]")
    counts: str = Field(description="COCO compressed RLE string (column-major).")


class SegmentClass(BaseModel):
    index: int = Field(description="Foreground class index (0-based).")
    label: int = Field(description="Value of this class in the label PNG (index + 1).")
    name: str
    score: float | None = Field(description="Image-level classification score.")
    area: int = Field(description="Pixels labelled with this class.")
    bbox: list[int] = Field(description="[x, y, width, height]")
    rle: Rle


class SegmentResponse(BaseModel):
    width: int
    height: int
    method: str
    threshold: float
    classes: list[SegmentClass]
    scores: dict[str, float] = Field(description="Classification score of every foreground class.")


class CamClassStats(BaseModel):
    index: int
    name: str
    score: float | None
    min: float
    max: float
    mean: float
    area: float = Field(description="Fraction of pixels with CAM > threshold.")
    area_pixels: int
    overlay_png: str = Field(description="Base64 PNG: the CAM as a heat map over the image.")


class CamResponse(BaseModel):
    width: int
    height: int
    refined: bool
    threshold: float
    classes: list[CamClassStats]
    scores: dict[str, float]


class JobOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    method: MethodName | None = Field(None, description="Default: the best method the repository has.")
    threshold: float | None = Field(None, ge=0.0, le=1.0, description="Background threshold (default: the model's).")
    max_side: int | None = Field(None, ge=8, le=16384, description=(
        "Long side images are resized to (when longer) before inference; outputs stay at each image's size. "
        "Default: the server's SEAM_MAX_SIDE, else the model's working side. An image whose estimated memory "
        "exceeds the engine's budget fails alone, its error naming the max_side that would fit."))
    outputs: list[OutputKind] = Field(default_factory=lambda: ["png"], min_length=1, max_length=6,
                                      description="png: VOC-palette label; npz: CAMs (old name npy accepted); "
                                                  "coco: COCO RLE; overlay; "
                                                  "labelstudio: Label Studio tasks with predictions; cvat: CVAT "
                                                  "Segmentation mask 1.1 zip (docs/labelstudio.md, docs/cvat.md).")
    image_url_prefix: str | None = Field(None, max_length=2048, pattern=r"^(https?://|/)",
                                         description="labelstudio output: task image URL = prefix + the image's path "
                                                     "in the job (e.g. /data/local-files/?d=photos/).")

    @field_validator("outputs", mode="before")
    @classmethod
    def _unique(cls, v: object) -> object:
        if not isinstance(v, list) or not all(isinstance(k, str) for k in v):
            return v  # not a list of names: the field's own validation says what is wrong (never a TypeError here)
        return list(dict.fromkeys(OUTPUT_ALIASES.get(k, k) for k in v))

    @model_validator(mode="after")
    def _prefix_for_labelstudio(self) -> JobOptions:
        if "labelstudio" in self.outputs and not self.image_url_prefix:
            raise ValueError("the labelstudio output needs image_url_prefix (how Label Studio reaches the images)")
        return self


class DirectoryJobRequest(JobOptions):
    directory: str = Field(min_length=1, max_length=4096,
                           description="Folder of images, relative to (or under) SEAM_ALLOWED_ROOT.")
    recursive: bool = False
    labels: dict[str, list[str | int]] | None = Field(
        None, description="{image name or id: [class names or indices]}; images not listed: predicted.")


class JobImageError(BaseModel):
    image: str
    error: str


class JobLinks(BaseModel):
    self: str
    results: str


class JobPublic(BaseModel):
    id: str
    state: JobState
    total: int
    done: int
    failed: int
    progress: float = Field(description="(done + failed) / total")
    method: str | None
    threshold: float | None
    outputs: list[str]
    source: str
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    expires_at: datetime
    error: str | None = None
    errors: list[JobImageError] = Field(description="Per-image failures (first 100).")
    links: JobLinks


class JobList(BaseModel):
    jobs: list[JobPublic]
    total: int
    offset: int
    limit: int
