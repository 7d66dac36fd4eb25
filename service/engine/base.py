"""The contract between the API/workers and whatever runs the models.

The API, the Celery tasks and the embedded executor only talk to an
`InferenceEngine`; tests pass a fake one to `create_app(engine=...)` or run the server with
SEAM_ENGINE=fake (`service/fake_engine.py`).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

import numpy as np

from seam.common.cam import CamResult

# where CAMs come back: at the image's size, or at the size the passes ran at (no upsampling)
MapSize = Literal["image", "working"]
MAP_SIZES: tuple[str, ...] = ("image", "working")


@dataclass
class SegmentResult:
    """label: (H, W) uint8, 0 = background, c+1 = foreground class c; the input's size.
    classes: the foreground classes the label shows (each labels at least one pixel)."""

    label: np.ndarray
    classes: list[int]
    scores: np.ndarray
    method: str
    cams: CamResult | None = field(default=None, repr=False)


@dataclass(frozen=True)
class MemoryEstimate:
    """What one request would hold at its peak, against the engine's budget.

    working_hw: the size the multi-scale passes run at (the image's, or smaller when its long
    side exceeds max_side); suggested_max_side: the largest max_side that fits (None when
    even the smallest does not)."""

    needed_bytes: int
    budget_bytes: int
    image_hw: tuple[int, int]
    working_hw: tuple[int, int]
    max_side: int | None
    suggested_max_side: int | None = None

    @property
    def fits(self) -> bool:
        return self.needed_bytes <= self.budget_bytes

    def as_dict(self) -> dict:
        return {"needed_mb": round(self.needed_bytes / 2**20, 1), "budget_mb": round(self.budget_bytes / 2**20, 1),
                "image": f"{self.image_hw[1]}x{self.image_hw[0]}",
                "working": f"{self.working_hw[1]}x{self.working_hw[0]}", "max_side": self.max_side,
                "suggested_max_side": self.suggested_max_side}


class MemoryBudgetError(ValueError):
    """A request whose estimated peak memory exceeds the engine's budget (the API answers 413)."""

    def __init__(self, estimate: MemoryEstimate) -> None:
        self.estimate = estimate
        e = estimate
        hint = (f"; send max_side={e.suggested_max_side} or less" if e.suggested_max_side
                else "; no max_side fits: use a smaller image or fewer scales")
        super().__init__(
            f"a {e.image_hw[1]}x{e.image_hw[0]} image processed at {e.working_hw[1]}x{e.working_hw[0]} needs about "
            f"{e.needed_bytes / 2**20:.0f} MiB, over the engine's memory budget of {e.budget_bytes / 2**20:.0f} MiB"
            + hint)


@dataclass
class ModelInfo:
    name: str
    kind: str  # seam | affinity | deeplab
    backbone: str
    classes: list[str]  # foreground class names
    provider: str
    manifest: dict = field(default_factory=dict, repr=False)
    description: str | None = None  # what the model knows (manifest `description`), for users
    cls_threshold: float | None = None  # score from which a class is predicted present (seam)
    bg_threshold: float | None = None  # default background threshold (seam)


class InferenceEngine(Protocol):
    def models(self) -> list[ModelInfo]: ...

    def foreground_classes(self) -> list[str]: ...

    def methods(self) -> list[str]:
        """Methods of the table (`seam.service.engine.methods`) the loaded models can run, best first
        (e.g. ['deeplab', 'rw', 'pcm', 'cam'])."""
        ...

    def cam(
        self,
        rgb: np.ndarray,
        labels: Sequence[int] | None = None,
        refined: bool = True,
        scales: Sequence[float] | None = None,
        flip: bool | None = None,
        max_side: int | None = None,
        size: MapSize = "image",
    ) -> CamResult:
        """Maps in [0, 1] at the image's size (size="working": at the size the passes ran at);
        the passes run at most at `max_side` on the long side. labels=None: the engine's
        `seam.common.cam.predict_classes`, classes with an all-zero map dropped."""
        ...

    def segment(
        self,
        rgb: np.ndarray,
        labels: Sequence[int] | None = None,
        method: str | None = None,
        threshold: float | None = None,
        crf: bool = False,
        max_side: int | None = None,
    ) -> SegmentResult: ...

    def estimate(
        self,
        hw: tuple[int, int],
        method: str | None = None,
        labels: Sequence[int] | None = None,
        max_side: int | None = None,
        batch: int = 1,
    ) -> MemoryEstimate:
        """Peak memory of segmenting (or, method='cam'/'pcm', computing CAMs of) `batch`
        images of size `hw`; cheap (no inference), for admission before any work."""
        ...
