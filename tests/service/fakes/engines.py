"""Engines for the service tests: the product's deterministic fake engine, one that holds images
until released, and one that records the size of every batched call."""
from __future__ import annotations

import threading

from seam.service.fake_engine import FAIL_PIXEL, FAKE_CLASSES, FakeEngine

__all__ = ["FAIL_PIXEL", "FAKE_CLASSES", "BatchCountingEngine", "FakeEngine", "GatedEngine"]


class GatedEngine(FakeEngine):
    """Holds every image until the test sets `gate` (at most `hold_s`): lets a test look at a
    running job or keep requests in flight. `reached` is set once an image waits at the gate."""

    def __init__(self, hold_s: float = 20.0, **kw) -> None:
        super().__init__(**kw)
        self.hold_s = hold_s
        self.gate = threading.Event()
        self.reached = threading.Event()

    def segment(self, *a, **kw):
        self.reached.set()
        self.gate.wait(self.hold_s)
        return super().segment(*a, **kw)


class BatchCountingEngine(FakeEngine):
    """Records every batched call as ("segment" | "cam", number of images); fails the images whose
    first pixel is FAIL_PIXEL like the fake engine it is."""

    def __init__(self, **kw) -> None:
        super().__init__(**kw)
        self.batches: list[tuple[str, int]] = []

    def sizes(self, kind: str = "segment") -> list[int]:
        """The sizes of the batched calls of one kind, in call order."""
        return [n for k, n in self.batches if k == kind]

    def segment_many(self, rgbs, labels, **kw):
        self.batches.append(("segment", len(rgbs)))
        return super().segment_many(rgbs, labels, **kw)

    def cam_many(self, rgbs, labels, **kw):
        self.batches.append(("cam", len(rgbs)))
        return super().cam_many(rgbs, labels, **kw)
