"""`models/NAME/manifest.json`: everything the torch-free engine needs to run an exported
network, written by `seam export` and validated here on both sides.

The service reads preprocessing (mean/std), output stride, default scales and
thresholds, CRF and random-walk settings from the manifest instead of repeating them.
"""
from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from seam.common.cam import DEFAULT_BG_THRESHOLD, DEFAULT_CLS_THRESHOLD, DEFAULT_SCALES, OUTPUT_STRIDE
from seam.common.files import file_sha256  # noqa: F401 - part of the model contract
from seam.common.image import IMAGENET_MEAN, IMAGENET_STD
from seam.modelrepo.precision import PrecisionInfo

MANIFEST_NAME = "manifest.json"
# 2: the SEAM graph stops before the PCM's hw x hw product (outputs cam, pcm_n, pcm_g) and
# the product runs in column blocks in a second graph (`pcm`); working resolution and memory.
SCHEMA_VERSION = 2
ModelKind = Literal["seam", "affinity", "deeplab"]
MODEL_KINDS: tuple[str, ...] = ("seam", "affinity", "deeplab")
# output tensor names per kind, in the order the exported graph returns them
KIND_OUTPUTS: dict[str, tuple[str, ...]] = {
    # (B, C, h8, w8) raw CAM (channel 0 = background), (B, C, h8, w8) the PCM's normalised CAM,
    # (B, D, h8, w8) the PCM's L2-normalised embedding; `PCM_IO` turns the last two into cam_rv
    "seam": ("cam", "pcm_n", "pcm_g"),
    "affinity": ("features",),  # (B, D, h8, w8) AffinityNet embedding for the random walk
    "deeplab": ("logits",),  # (B, C, h8, w8) segmentation logits, channel 0 = background
}


# the PCM block graph: pcm_n (B, C, N), pcm_g (B, D, N), pcm_q (B, D, M) -> cam_rv (B, C, M)
PCM_INPUTS: tuple[str, ...] = ("pcm_n", "pcm_g", "pcm_q")
PCM_OUTPUTS: tuple[str, ...] = ("cam_rv",)
# network working set per input pixel and batch item, when a manifest does not say
# (measured: onnxruntime CPU, ResNet-38 ~1.1 kB; the small backbone ~0.22 kB)
DEFAULT_BYTES_PER_PIXEL = 2048.0


def _positive_scales(v: tuple[float, ...]) -> tuple[float, ...]:
    if not v or min(v) <= 0:
        raise ValueError("scales must be a non-empty list of positive numbers")
    return v


Scales = Annotated[tuple[float, ...], AfterValidator(_positive_scales)]

class ManifestError(ValueError):
    """A model directory whose manifest is missing, invalid, or does not match its files."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class InputSpec(_Strict):
    """x = (rgb / 255 - mean) / std, RGB order, NCHW float32."""

    name: str = "image"
    layout: Literal["NCHW"] = "NCHW"
    color: Literal["RGB"] = "RGB"
    dtype: Literal["float32"] = "float32"
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    min_size: int = Field(2, ge=1, description="smallest height/width the graph was exported for")
    max_size: int = Field(4096, ge=8, description="largest height/width the graph was exported for")
    train_long_side: tuple[int, int] | None = Field(
        None, description="range of the image long side the model was trained at (before cropping)")
    working_side: int | None = Field(
        None, ge=8, description="inputs whose long side exceeds this are resized to it before the multi-scale "
                                "passes (outputs stay at the original size); None = never resize")
    bytes_per_pixel: float = Field(
        DEFAULT_BYTES_PER_PIXEL, gt=0, description="network working set per input pixel and batch item (memory "
                                                   "admission)")

    @field_validator("std")
    @classmethod
    def _positive_std(cls, v: tuple[float, float, float]) -> tuple[float, float, float]:
        if min(v) <= 0:
            raise ValueError("std must be positive")
        return v


class CamSettings(_Strict):
    """Defaults of multi-scale CAM inference (the authors' infer_SEAM)."""

    scales: Scales = DEFAULT_SCALES
    flip: bool = True
    refined: bool = True  # PCM output (cam_rv), as the authors' pseudo labels
    bg_threshold: float = Field(DEFAULT_BG_THRESHOLD, ge=0.0, le=1.0)
    cls_threshold: float = Field(DEFAULT_CLS_THRESHOLD, ge=0.0, le=1.0)


class CrfSettings(_Strict):
    """Dense CRF as the authors' `imutils.crf_inference`."""

    iterations: int = Field(10, ge=1)
    gaussian_sxy: float = 3.0
    gaussian_compat: float = 3.0
    bilateral_sxy: float = 80.0
    bilateral_srgb: float = 13.0
    bilateral_compat: float = 10.0

    def kwargs(self) -> dict[str, float]:
        """Keyword arguments of `seam.common.crf.dense_crf`."""
        return {"iters": self.iterations, "gauss_sxy": self.gaussian_sxy, "gauss_compat": self.gaussian_compat,
                "bi_sxy": self.bilateral_sxy, "bi_srgb": self.bilateral_srgb, "bi_compat": self.bilateral_compat}


class RandomWalkSettings(_Strict):
    """AffinityNet random walk (the authors' `infer_aff`)."""

    alpha: float = Field(6.0, gt=0, description="background channel (1 - max CAM)^alpha")
    beta: float = Field(8.0, gt=0, description="affinities raised to this power")
    logt: int = Field(6, ge=0, description="the transition matrix is squared logt times (T^(2^logt))")
    radius: int = Field(5, ge=1, description="affinity neighbourhood on the stride-8 grid")


class DeepLabSettings(_Strict):
    """Multi-scale DeepLab inference: softmax of the logits upsampled to the image, averaged."""

    scales: Scales = (1.0,)
    flip: bool = False


class OnnxFile(_Strict):
    file: str = "model.onnx"
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    external_data: dict[str, str] = Field(default_factory=dict, description="file name -> sha256")
    ir_version: int
    opset: int
    inputs: tuple[str, ...] = ("image",)
    outputs: tuple[str, ...]
    dynamic_axes: tuple[str, ...] = ("batch", "height", "width")

    @field_validator("external_data")
    @classmethod
    def _hex(cls, v: dict[str, str]) -> dict[str, str]:
        for name, digest in v.items():
            if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
                raise ValueError(f"external_data[{name!r}] is not a sha256 hex digest")
            if "/" in name or "\\" in name or name.startswith("."):
                raise ValueError(f"external data file {name!r} must be a plain file name")
        return v

    def files(self) -> dict[str, str]:
        return {self.file: self.sha256, **self.external_data}


class PcmGraphFile(_Strict):
    """The PCM's column-block graph (seam models): weightless, run block by block."""

    file: str = "pcm.onnx"
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    inputs: tuple[str, ...] = PCM_INPUTS
    outputs: tuple[str, ...] = PCM_OUTPUTS


class ParityCheck(_Strict):
    """The export's own check: onnxruntime vs eager torch on these input shapes."""

    shapes: tuple[tuple[int, int, int, int], ...]
    max_abs_diff: dict[str, float]
    tolerance: float


class Provenance(_Strict):
    checkpoint: str
    checkpoint_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    training_config: dict[str, Any] = Field(default_factory=dict)
    dataset: dict[str, Any] = Field(default_factory=dict, description="what the checkpoint was trained on")
    training: dict[str, Any] = Field(default_factory=dict, description="the run's summary (iterations, time, ...)")
    created: datetime
    torch_version: str
    onnx_version: str
    exporter: str
    parity: ParityCheck | None = None


class Manifest(_Strict):
    schema_version: Literal[1, 2] = SCHEMA_VERSION  # 1: affinity/deeplab models still load
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    kind: ModelKind
    backbone: str
    class_names: tuple[str, ...] = Field(description="background first, then the foreground classes")
    description: str | None = Field(None, max_length=1000, description=(
        "what the model knows (its domain and classes), shown by GET /models and the web page so that an "
        "image from outside it is not read as one of its classes unawares; absent in older manifests"))
    input: InputSpec = InputSpec()
    output_stride: int = OUTPUT_STRIDE
    onnx: OnnxFile
    pcm: PcmGraphFile | None = None  # seam
    cam: CamSettings | None = None  # seam
    crf: CrfSettings = CrfSettings()
    random_walk: RandomWalkSettings | None = None  # affinity
    deeplab: DeepLabSettings | None = None  # deeplab
    # number format of the graph's weights; int8 calibration (training/export/model_dir.py)
    precision: PrecisionInfo = PrecisionInfo()
    provenance: Provenance

    @field_validator("class_names")
    @classmethod
    def _classes(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        if v and v[0] != "background":
            raise ValueError("class_names must start with 'background'")
        if len(set(v)) != len(v):
            raise ValueError("class_names must be unique")
        return v

    @model_validator(mode="after")
    def _per_kind(self) -> Manifest:
        want = KIND_OUTPUTS[self.kind]
        if tuple(self.onnx.outputs) != want:
            raise ValueError(f"a {self.kind} model must output {list(want)}, manifest says {list(self.onnx.outputs)}")
        if self.kind in ("seam", "deeplab") and len(self.class_names) < 2:
            raise ValueError(f"a {self.kind} model needs class_names (background + at least one class)")
        if self.kind == "seam" and (self.cam is None or self.pcm is None):
            raise ValueError("a seam model needs cam settings and a pcm graph")
        if self.kind == "affinity" and self.random_walk is None:
            raise ValueError("an affinity model needs random_walk settings")
        if self.kind == "deeplab" and self.deeplab is None:
            raise ValueError("a deeplab model needs deeplab settings")
        return self

    @property
    def foreground(self) -> list[str]:
        return list(self.class_names[1:])

    def to_json(self) -> str:
        return self.model_dump_json(indent=2) + "\n"


def read_manifest(model_dir: str | Path) -> Manifest:
    """Parse and validate `model_dir/manifest.json` (no file hashing)."""
    path = Path(model_dir) / MANIFEST_NAME
    if not path.is_file():
        raise ManifestError(f"{model_dir}: no {MANIFEST_NAME}")
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ManifestError(f"{path}: unreadable JSON ({exc})") from exc
    if isinstance(data, dict) and data.get("schema_version") == 1 and data.get("kind") == "seam":
        raise ManifestError(
            f"{path}: a schema 1 model (its SEAM graph builds the PCM's hw x hw affinity in one piece, which "
            "does not fit in memory for photos); re-export it from its checkpoint with `seam export`")
    try:
        return Manifest.model_validate(data)
    except ValidationError as exc:
        raise ManifestError(f"{path}: invalid manifest:\n{exc}") from exc


def verify_files(model_dir: str | Path, manifest: Manifest) -> None:
    """Check every file the manifest names exists and has the recorded sha256."""
    model_dir = Path(model_dir)
    files = manifest.onnx.files()
    if manifest.pcm is not None:
        files[manifest.pcm.file] = manifest.pcm.sha256
    for name, digest in files.items():
        p = model_dir / name
        if not p.is_file():
            raise ManifestError(f"{model_dir}: {name} is missing")
        actual = file_sha256(p)
        if actual != digest:
            raise ManifestError(
                f"{p}: sha256 {actual[:12]}... does not match the manifest's {digest[:12]}...; "
                "the model was modified or only partly copied: re-export it"
            )


def load_model_dir(model_dir: str | Path, verify: bool = True) -> Manifest:
    manifest = read_manifest(model_dir)
    if manifest.name != Path(model_dir).name:
        # a renamed directory is fine; the directory name is what users type
        manifest = manifest.model_copy(update={"name": Path(model_dir).name})
    if verify:
        verify_files(model_dir, manifest)
    return manifest
