"""Request and response models (the OpenAPI schema is generated from these)."""
from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    GetCoreSchemaHandler,
    GetJsonSchemaHandler,
    field_validator,
    model_validator,
)
from pydantic_core import core_schema
from seam.service.engine import methods
from seam.service.outputs import kinds

JobState = Literal["queued", "running", "succeeded", "failed", "cancelled"]
# A bound on the work of validating a hostile list; the kinds themselves come from the table.
MAX_OUTPUTS_LISTED = 32


class _TableName:
    """A name checked against one of the extension tables (output kinds, methods) and documented
    with its current entries: both read the table when used, so an entry registered after import
    is accepted and listed in the OpenAPI enum."""

    def __init__(self, check: Callable[[str], str], names: Callable[[], list[str]]) -> None:
        self.check, self.names = check, names

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler) -> core_schema.CoreSchema:
        return core_schema.no_info_after_validator_function(self.check, handler(source))

    def __get_pydantic_json_schema__(self, schema: core_schema.CoreSchema,
                                     handler: GetJsonSchemaHandler) -> dict[str, Any]:
        return {**handler(schema), "enum": self.names()}


OutputKindName = Annotated[str, _TableName(kinds.check_name, kinds.kind_names)]
MethodName = Annotated[str, _TableName(methods.check_name, methods.method_names)]


def method_help(schema: dict[str, Any]) -> None:
    """The help of a `method` field, from the methods table when the schema is built."""
    schema["description"] = ("Default: the best the loaded models can run (GET /models lists them). "
                             f"{methods.help_text()}.")


def _outputs_help(schema: dict[str, Any]) -> None:
    schema["description"] = f"Output kinds (GET /outputs lists them): {kinds.help_text()}."


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
    methods: list[str] = Field(default_factory=list, description="The available methods that run this model.")


class MethodPublic(BaseModel):
    name: str
    label: str = Field(description="A short title (the web page's method lists).")
    description: str
    models: list[str] = Field(description="The model kinds it needs.")
    where: list[methods.Place] = Field(description="Where it may run: sync (POST /segment, the labelling "
                                                             "tools) and/or jobs (POST /jobs).")
    cams: methods.CamsKind | None = Field(description=(
        "The CAMs it starts from (GET /cam or /cam/refined gives them); null: none."))
    plain_threshold: bool = Field(description=(
        "Its mask is just `cams` above the background threshold: a client holding those maps can recompute it "
        "for any threshold without asking again."))


class ModelVersionPublic(BaseModel):
    version: int
    promoted: bool = Field(description="The version a request naming no version gets.")
    state: str = Field(description="serving (the promoted engine answering now), loaded (a pinned version in "
                                   "memory), available (loads on first use), refused (checksum or manifest error: "
                                   "see error), remote (the workers load it)")
    error: str | None = None
    kinds: list[str] = Field(default_factory=list, description="The model kinds it holds (seam, affinity, deeplab).")
    classes: list[str] = Field(default_factory=list)
    methods: list[str] = Field(default_factory=list, description="The methods its kinds can run.")
    description: str | None = None
    provenance: dict = Field(default_factory=dict, description="Per kind: backbone, checkpoint, creation, data set.")
    legacy: bool = Field(False, description="A flat model dir of an unversioned repository (always version 1).")


class RepositoryModelPublic(BaseModel):
    name: str
    legacy: bool
    promoted: int | None = Field(description="The promoted version (PROMOTED file, else the highest).")
    serving: int | None = Field(description="The version answering requests without a version now; differs from "
                                            "`promoted` while a new promotion loads or when it was refused.")
    versions: list[ModelVersionPublic]


class ModelsResponse(BaseModel):
    models: list[ModelPublic]
    classes: list[str] = Field(description="Foreground classes; label value = index + 1, 0 = background.")
    methods: list[str] = Field(description="Available methods, best first (the default is the first).")
    method_details: list[MethodPublic] = Field(default_factory=list, description=(
        "The available methods, in the order of `methods`, with what each needs and does."))
    default_method: str | None = Field(description="What a synchronous request without a method runs.")
    description: str | None = Field(None, description=(
        "What the segmenting model knows (its domain): an image from outside it still gets the closest of its "
        "classes."))
    class_threshold: float | None = Field(None, description=(
        "Without labels, a class is predicted present when its score reaches this (and its map is not all zero)."))
    default_threshold: float | None = Field(None, description="The model's default background threshold.")
    default_model: str | None = Field(None, description=(
        "NAME:VERSION of the model the fields above describe: the default model's serving version."))
    repository: list[RepositoryModelPublic] = Field(default_factory=list, description=(
        "Every model of the repository: its versions, the promoted one, load state and provenance."))


class PromoteRequest(BaseModel):
    version: int = Field(ge=0, description="The version to promote.")


class PromotionResponse(BaseModel):
    name: str
    promoted: int
    previous: int | None = None


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
    model: str | None = Field(None, description="The model version that computed it (NAME:VERSION).")


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
    model: str | None = Field(None, description="The model version that computed it (NAME:VERSION).")


MODEL_REF_PATTERN = r"^([A-Za-z0-9][A-Za-z0-9._-]*)?(:[0-9]+)?$"
MODEL_REF_HELP = ("Model: NAME or NAME:VERSION (GET /models lists them). Without a version the promoted one; "
                  "without a name the default model.")


class JobOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str | None = Field(None, max_length=200, pattern=MODEL_REF_PATTERN, description=(
        MODEL_REF_HELP + " The job pins the version (and its digest) at submission: every chunk runs on it."))

    method: MethodName | None = Field(None, json_schema_extra=method_help)
    threshold: float | None = Field(None, ge=0.0, le=1.0, description="Background threshold (default: the model's).")
    max_side: int | None = Field(None, ge=8, le=16384, description=(
        "Long side images are resized to (when longer) before inference; outputs stay at each image's size. "
        "Default: the server's SEAM_MAX_SIDE, else the model's working side. An image whose estimated memory "
        "exceeds the engine's budget fails alone, its error naming the max_side that would fit."))
    outputs: list[OutputKindName] = Field(default_factory=lambda: ["png"], min_length=1,
                                          max_length=MAX_OUTPUTS_LISTED, json_schema_extra=_outputs_help)
    image_url_prefix: str | None = Field(None, max_length=2048, pattern=r"^(https?://|/)",
                                         description="labelstudio output: task image URL = prefix + the image's path "
                                                     "in the job (e.g. /data/local-files/?d=photos/).")

    @field_validator("outputs", mode="before")
    @classmethod
    def _unique(cls, v: object) -> object:
        if not isinstance(v, list) or not all(isinstance(k, str) for k in v):
            return v  # not a list of names: the field's own validation says what is wrong (never a TypeError here)
        return list(dict.fromkeys(kinds.canonical(k) for k in v))

    @model_validator(mode="after")
    def _required_options(self) -> JobOptions:
        for name in self.outputs:
            for option, why in kinds.get(name).requires.items():
                if getattr(self, option, None) in (None, ""):
                    raise ValueError(f"the {name} output needs {option} ({why})")
        return self


def _without_defaults(schema: dict[str, Any]) -> None:
    for prop in schema.get("properties", {}).values():
        prop.pop("default", None)  # a form field is absent or a string, never null


def _form_outputs_help(schema: dict[str, Any]) -> None:
    schema["description"] = f"Comma-separated subset of {','.join(kinds.kind_names())} (GET /outputs lists them)."


class JobUploadForm(BaseModel):
    """The multipart/form-data body of POST /jobs, for the OpenAPI schema: the route reads the form
    itself (seam.service.jobs.submit.form_options) and validates it as JobOptions."""

    model_config = ConfigDict(json_schema_extra=_without_defaults)

    archive: bytes = Field(None, description="zip or tar(.gz/.bz2/.xz) of images; may hold labels.csv or labels.json. "
                                             "Required unless `manifest` is sent.")
    manifest: bytes = Field(None, description="Instead of an archive: a JSONL or CSV manifest of image URIs with "
                                              "optional labels (docs/storage.md).")
    output_url: str = Field(None, max_length=4096, description="With `manifest`: an s3:// prefix for the outputs and "
                                                               "results.jsonl instead of a results zip.")
    labels: bytes = Field(None, description="Optional label table: CSV `image,labels` or JSON {image: [classes]}.")
    model: str = Field(None, max_length=200, pattern=MODEL_REF_PATTERN, description=(
        MODEL_REF_HELP + " The job pins the version at submission."))
    method: MethodName = Field(None, json_schema_extra=method_help)
    threshold: float = Field(None, ge=0.0, le=1.0)
    max_side: int = Field(None, ge=8, le=16384, description=(
        "Long side images are resized to before inference (outputs keep each image's size)."))
    outputs: str = Field(None, examples=["png,coco"], json_schema_extra=_form_outputs_help)
    image_url_prefix: str = Field(None, max_length=2048, pattern=r"^(https?://|/)",
                                  description="labelstudio output: image URL = prefix + path in the job.")


class OutputKindPublic(BaseModel):
    kind: str
    extension: str = Field(description="Of its per-image files: <kind>/<image id><extension> in the results zip.")
    media_type: str = Field(description="Of its per-image files (GET /jobs/{id}/results/{kind}/{name}).")
    label: str = Field(description="A short title (the web page's checkbox).")
    description: str
    merged: list[str] = Field(description="Whole-job files this kind adds to the results zip.")
    requires: list[str] = Field(description="Job options this kind cannot do without.")
    preselected: bool = Field(description="Ticked by default on the web page.")


class DirectoryJobRequest(JobOptions):
    directory: str = Field(min_length=1, max_length=4096,
                           description="Folder of images, relative to (or under) SEAM_ALLOWED_ROOT.")
    recursive: bool = False
    labels: dict[str, list[str | int]] | None = Field(
        None, description="{image name or id: [class names or indices]}; images not listed: predicted.")


class UrlJobRequest(JobOptions):
    input_url: str = Field(min_length=1, max_length=4096, description=(
        "A data set where it lives (docs/storage.md): s3://bucket/prefix/ (every image under it) or the URL of a "
        "manifest (.jsonl or .csv of image URIs with optional labels; s3:// or http(s)://). Only buckets of "
        "SEAM_DATASET_BUCKETS and hosts of SEAM_DATASET_HTTP_HOSTS."))
    output_url: str | None = Field(None, max_length=4096, description=(
        "s3://bucket/prefix/: outputs are written there, with results.jsonl (one line per image: id, uri, outputs, "
        "classes, scores, error), instead of the job's results zip."))


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
    model: str | None = Field(None, description="NAME:VERSION the job pinned at submission: every chunk runs on it.")
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
