"""The manifest's `precision` section: what number format the graph's weights are in and,
for quantized graphs, how they were calibrated and how far they are from fp32.

Written by `training/export/model_dir.py`, read by the engine (no torch here).
"""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

Precision = Literal["fp32", "int8", "fp16"]
PRECISIONS: tuple[str, ...] = ("fp32", "int8", "fp16")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Calibration(_Strict):
    """The images int8 ranges were measured on, preprocessed as inference does."""

    source: str = Field(description="the list file or directory given to `seam export --calibration`")
    images: int = Field(ge=1)
    fingerprint: str = Field(pattern=r"^[0-9a-f]{64}$",
                             description="sha256 over the calibration images' names and contents")
    scales: tuple[float, ...]
    max_side: int | None = Field(None, description="long side calibration inputs were capped at after scaling")
    method: Literal["minmax", "entropy", "percentile"] = Field(description="the calibration method kept")
    method_errors: dict[str, float] = Field(
        default_factory=dict, description="each method tried: relative max |int8 - fp32| of `cam`")


class PrecisionInfo(_Strict):
    weights: Precision = "fp32"
    provider: Literal["any", "cpu", "cuda"] = Field(
        "any", description="where this precision pays: int8 on CPU (VNNI/AMX), fp16 on CUDA")
    fp32_nodes: tuple[str, ...] = Field((), description="nodes deliberately left in fp32")
    calibration: Calibration | None = None
    max_error: dict[str, float] = Field(
        default_factory=dict,
        description="per output: max |low precision - fp32| / max |fp32| on held-out images at export")
    speedup: float | None = Field(None, description="fp32 time / this graph's time, measured at export on CPU")
