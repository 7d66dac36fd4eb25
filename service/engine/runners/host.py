"""What a method's runner is given: the call (`SegmentCall`) and the engine running it, seen
through `MethodHost` (what every engine offers: CAMs, the background threshold, a dense CRF) or
`ModelHost` (an engine that also runs networks of the model repository, as `OnnxEngine` does)."""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple, Protocol

import numpy as np
from seam.service.engine.base import SegmentResult

from seam.common.cam import CamResult

if TYPE_CHECKING:
    from seam.service.engine.loading import LoadedModel


@dataclass(frozen=True)
class SegmentCall:
    """One `segment_many` call, checked by the engine: `labels` holds one list of in-range
    foreground indices (or None: predicted) per image, `method` the table entry being run."""

    method: str
    rgbs: Sequence[np.ndarray]
    labels: Sequence[list[int] | None]
    threshold: float | None = None
    crf: bool = False
    max_side: int | None = None


class MethodHost(Protocol):
    """What every engine offers a runner."""

    def working_cams(self, rgbs: Sequence[np.ndarray], labels: Sequence[list[int] | None], refined: bool,
                     max_side: int | None) -> list[CamResult]:
        """CAMs of each image at the size the passes ran at (refined: the PCM's)."""
        ...

    def background_threshold(self, threshold: float | None) -> float:
        """`threshold` checked, else the model's default."""
        ...

    def crf_label(self, rgb: np.ndarray, probs: np.ndarray, classes: Sequence[int],
                  out_hw: tuple[int, int]) -> np.ndarray:
        """Labels at `out_hw` from (1 + K, h, w) probabilities [background, classes] of `rgb` (h, w)."""
        ...


class ModelHost(MethodHost, Protocol):
    """An engine running the networks of a model repository."""

    def model(self, kind: str) -> LoadedModel: ...

    def run(self, m: LoadedModel, batch: np.ndarray, outputs: Sequence[str] | None = None) -> list[np.ndarray]:
        """One network pass (gated: passes queue when too many run at once)."""
        ...

    def working_side(self, m: LoadedModel, max_side: int | None) -> int: ...

    def check_size(self, m: LoadedModel, hw: tuple[int, int], scales: Sequence[float]) -> None: ...


class Footprint(NamedTuple):
    """A method's own memory at its peak, beyond its CAM passes: `net` bytes of its largest network pass
    (shared by a batch), `work` bytes per image."""

    net: int
    work: int


# A method's runner: the call's images -> one result each, in order.
SegmentRunner = Callable[[MethodHost, SegmentCall], list[SegmentResult]]
# Its own working set at a working size (h0, w0), for the engine's memory estimate.
FootprintFn = Callable[["ModelHost", tuple[int, int]], Footprint]
