"""How far a lower-precision graph is from its fp32 original (per output, on the same
inputs) and how fast one pass runs, both in the engine's CPU session settings, so a
graph is measured as it will run (int8 QDQ fused into QLinearConv)."""
from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class OutputError:
    """|low precision - fp32| of one output over the evaluation batches. `rel_*` divide by the
    fp32 output's largest |value| in the same batch (CAMs have arbitrary scale)."""

    max_abs: float
    rel_max: float
    rel_mean: float


def compare_outputs(
    ref_path: str | Path,
    test_path: str | Path,
    batches: Sequence[np.ndarray],
    input_name: str,
    threads: int | None = None,
) -> dict[str, OutputError]:
    """Per output: the difference between two graphs on the same inputs (engine session
    settings, so the int8 graph is measured as it will run, QDQ fused into QLinearConv)."""
    reference = reference_outputs(ref_path, batches, input_name, threads)
    return compare_to_reference(reference, test_path, batches, input_name, threads)


def reference_outputs(path: str | Path, batches: Sequence[np.ndarray], input_name: str,
                      threads: int | None = None) -> dict[str, list[np.ndarray]]:
    """{output name: its value for each batch} of the graph at `path` (engine CPU session):
    computed once, compared with every candidate."""
    from seam.modelrepo.runtime import cpu_session

    sess = cpu_session(path, threads)
    names = [o.name for o in sess.get_outputs()]
    runs = [sess.run(names, {input_name: x}) for x in batches]
    return {n: [r[i] for r in runs] for i, n in enumerate(names)}


def compare_to_reference(reference: dict[str, list[np.ndarray]], test_path: str | Path, batches: Sequence[np.ndarray],
                input_name: str, threads: int | None) -> dict[str, OutputError]:
    """`compare_outputs` against precomputed reference outputs."""
    from seam.modelrepo.runtime import cpu_session

    test = cpu_session(test_path, threads)
    names = list(reference)
    acc: dict[str, list[tuple[float, float, float]]] = {n: [] for n in names}
    for k, x in enumerate(batches):
        a = [reference[n][k] for n in names]
        b = test.run(names, {input_name: x})
        for n, r, t in zip(names, a, b, strict=True):
            r = r.astype(np.float64)
            d = np.abs(t.astype(np.float64) - r)
            scale = float(np.abs(r).max()) or 1.0
            acc[n].append((float(d.max()), float(d.max()) / scale, float(d.mean()) / scale))
    return {
        n: OutputError(max(v[0] for v in vals), max(v[1] for v in vals), float(np.mean([v[2] for v in vals])))
        for n, vals in acc.items()
    }


def time_pass(path: str | Path, x: np.ndarray, input_name: str, threads: int | None, reps: int = 3) -> float:
    """Fastest of `reps` runs (after one warm-up) in seconds: the least disturbed by other load."""
    from seam.modelrepo.runtime import cpu_session

    sess = cpu_session(path, threads)
    sess.run(None, {input_name: x})
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        sess.run(None, {input_name: x})
        best = min(best, time.perf_counter() - t0)
    return best
