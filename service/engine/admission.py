"""Admission: the working size of a request and its estimated peak memory against the engine's
budget, computed before any work (cheap: no inference) and refused with `MemoryBudgetError`."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from seam.service.engine.base import MemoryBudgetError, MemoryEstimate
from seam.service.engine.loading import LoadedModel
from seam.service.engine.runners.host import FootprintFn, ModelHost

from seam.common.cam import stride_size, working_size
from seam.common.image import scaled_size
from seam.common.pcm_blocks import pcm_peak_bytes

# working side of models whose manifest names none (schema 1): the top of the release's 448-768
DEFAULT_WORKING_SIDE = 768
# classes assumed present when a request names none (for the size of the output maps)
ASSUMED_CLASSES = 3
MIN_SIDE = 8


@dataclass(frozen=True)
class Work:
    """What a request runs: passes of `model` (+ its PCM when `pcm`) and a method's own `footprint`."""

    model: LoadedModel
    pcm: bool = False
    footprint: FootprintFn | None = None


@dataclass(frozen=True)
class Admission:
    """The budget (bytes one request may hold at its peak), the PCM's column block and the
    server-wide working side (None: each manifest's)."""

    budget: int
    pcm_block_bytes: int
    server_side: int | None = None

    def working_side(self, m: LoadedModel, requested: int | None) -> int:
        """The working side of a request: its own, else the server's, else the manifest's (else
        the release's 768), defaults clamped to what the graph accepts at the largest scale."""
        top = int(m.manifest.input.max_size / max(m.scales))
        if requested is None:
            default = self.server_side or m.manifest.input.working_side or DEFAULT_WORKING_SIDE
            return max(MIN_SIDE, min(default, top))
        requested = int(requested)
        if not MIN_SIDE <= requested <= top:
            raise ValueError(f"max_side must be in [{MIN_SIDE}, {top}] for {m.name} (its graph takes at most "
                             f"{m.manifest.input.max_size} pixels a side at scale {max(m.scales):g}), got {requested}")
        return requested

    def needed(self, host: ModelHost, work: Work, hw: tuple[int, int], labels: Sequence[int] | None, side: int,
               batch: int) -> int:
        """Estimated peak bytes: the largest network pass at the working size (the runner splits
        batches to fit), the blocked PCM, the working-size accumulators and the image-size outputs."""
        mf = work.model.manifest
        H, W = hw
        h0, w0 = working_size(hw, side)
        C = len(mf.class_names)
        K = len(labels) if labels is not None else min(C - 1, ASSUMED_CLASSES)
        bh, bw = max((scaled_size((h0, w0), s) for s in work.model.scales), key=lambda t: t[0] * t[1])
        net = mf.input.bytes_per_pixel * bh * bw
        if work.pcm:
            net += pcm_peak_bytes(stride_size(bh) * stride_size(bw), C, work.model.pcm_dim,
                                  budget=self.pcm_block_bytes)
        per_image = 4 * 4 * (C - 1) * h0 * w0  # accumulated maps, a flip pair and einsum temporaries
        if work.footprint is not None:
            own = work.footprint(host, (h0, w0))
            net, per_image = max(net, own.net), per_image + own.work
        outputs = K * H * W * 4 * 2 + H * W * 8  # maps at the image's size (+ resize temporary), labels
        inputs = H * W * 3 * 2  # decoded image and its working-size copy
        return int(net + batch * (per_image + outputs + inputs))

    def estimate(self, host: ModelHost, work: Work, hw: tuple[int, int], labels: Sequence[int] | None,
                 max_side: int | None, batch: int) -> MemoryEstimate:
        """`needed` against the budget, with the largest max_side that would fit when it does not."""
        H, W = (int(v) for v in hw)
        side = self.working_side(work.model, max_side)
        need = self.needed(host, work, (H, W), labels, side, batch)
        suggested = None
        if need > self.budget:
            lo, hi = MIN_SIDE, min(side, max(H, W))
            while lo < hi:  # largest side that fits: memory grows with the side
                mid = (lo + hi + 1) // 2
                if self.needed(host, work, (H, W), labels, mid, batch) <= self.budget:
                    lo = mid
                else:
                    hi = mid - 1
            if self.needed(host, work, (H, W), labels, lo, batch) <= self.budget:
                suggested = lo
        return MemoryEstimate(need, self.budget, (H, W), working_size((H, W), side), side, suggested)

    def admit(self, host: ModelHost, work: Work, hw: tuple[int, int], labels: Sequence[int] | None,
              max_side: int | None) -> None:
        est = self.estimate(host, work, hw, labels, max_side, 1)
        if not est.fits:
            raise MemoryBudgetError(est)

    def batch_size(self, host: ModelHost, work: Work, hw: tuple[int, int], side: int, n: int) -> int:
        """How many images of size `hw` may share a batch (halving `n` until it fits the budget)."""
        while n > 1 and self.needed(host, work, hw, None, side, n) > self.budget:
            n = (n + 1) // 2
        return n


def check_size(m: LoadedModel, hw: tuple[int, int], scales: Sequence[float]) -> None:
    """ValueError when the largest scale of a working size `hw` exceeds what the graph accepts."""
    lim = m.manifest.input.max_size
    big = max(max(scaled_size(hw, s)) for s in scales)
    if big > lim:
        raise ValueError(f"image {hw[1]}x{hw[0]} at scale {max(scales):g} is {big} pixels on a side; "
                         f"the model accepts at most {lim} (lower max_side)")
