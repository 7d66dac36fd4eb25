"""The contract between the API/workers and whatever runs the models.

The API, the Celery tasks and the embedded executor only talk to an
`InferenceEngine`; tests substitute a fake through FastAPI dependency overrides.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

import numpy as np

from seam.common.cam import CamResult

Method = Literal["cam", "pcm", "rw", "deeplab"]
METHODS: tuple[str, ...] = ("cam", "pcm", "rw", "deeplab")


@dataclass
class SegmentResult:
    """label: (H, W) uint8, 0 = background, c+1 = foreground class c; the input's size."""

    label: np.ndarray
    classes: list[int]
    scores: np.ndarray
    method: str
    cams: CamResult | None = field(default=None, repr=False)


@dataclass
class ModelInfo:
    name: str
    kind: str  # seam | affinity | deeplab
    backbone: str
    classes: list[str]  # foreground class names
    provider: str
    manifest: dict = field(default_factory=dict, repr=False)


class InferenceEngine(Protocol):
    def models(self) -> list[ModelInfo]: ...

    def foreground_classes(self) -> list[str]: ...

    def methods(self) -> list[str]:
        """Methods the loaded repository supports, best first (e.g. ['deeplab', 'rw', 'pcm', 'cam'])."""
        ...

    def cam(
        self,
        rgb: np.ndarray,
        labels: Sequence[int] | None = None,
        refined: bool = True,
        scales: Sequence[float] | None = None,
        flip: bool | None = None,
    ) -> CamResult: ...

    def segment(
        self,
        rgb: np.ndarray,
        labels: Sequence[int] | None = None,
        method: str | None = None,
        threshold: float | None = None,
        crf: bool = False,
    ) -> SegmentResult: ...
