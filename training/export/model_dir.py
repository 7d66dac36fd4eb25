"""A model directory's fp32 graph turned into int8 or fp16 in place (`apply_precision`), with
the manifest updated to match: new sha256, and a `precision` section saying what was kept
in fp32, the calibration (images, fingerprint, method and its measured error) and, for
int8, the speed-up over fp32 measured on this machine."""
from __future__ import annotations

import hashlib
import logging
import random
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from seam.training.export.calibration import (
    CALIBRATION_METHODS,
    DEFAULT_CALIBRATION_N,
    DEFAULT_CALIBRATION_SIDE,
    calibration_batches,
    calibration_paths,
)
from seam.training.export.compare import compare_outputs, time_pass
from seam.training.export.fp16 import convert_fp16
from seam.training.export.graph_edits import QuantizeError
from seam.training.export.int8 import quantize_model

from seam.common.files import file_sha256
from seam.common.image import Normalization
from seam.modelrepo.precision import PRECISIONS

if TYPE_CHECKING:
    from seam.modelrepo.manifest import Manifest
    from seam.modelrepo.precision import PrecisionInfo

log = logging.getLogger(__name__)


def fingerprint(paths: Sequence[str | Path]) -> str:
    """sha256 over the images' names and bytes, in the given order."""
    h = hashlib.sha256()
    for p in paths:
        p = Path(p)
        h.update(p.name.encode() + b"\0")
        h.update(bytes.fromhex(file_sha256(p)))
    return h.hexdigest()


def _model_scales(manifest: Manifest) -> tuple[float, ...]:
    if manifest.kind == "seam" and manifest.cam is not None:
        return tuple(manifest.cam.scales)
    if manifest.kind == "deeplab" and manifest.deeplab is not None:
        return tuple(manifest.deeplab.scales)
    return (1.0,)


def _replace_graph(model_dir: Path, new: Path, name: str) -> dict[str, str]:
    """Move `new` (+ its .data) over model_dir/name (+ .data); {external file: sha256}."""
    old_data = model_dir / (name + ".data")
    if old_data.exists():
        old_data.unlink()
    new_data = new.with_name(new.name + ".data")
    new.replace(model_dir / name)
    if new_data.exists():
        new_data.replace(old_data)
        return {old_data.name: file_sha256(old_data)}
    return {}


def check_precision_args(precision: str, calibration: str | Path | None) -> None:
    """Fail before any export work: unknown precision, int8 without (readable) calibration images."""
    if precision not in PRECISIONS:
        raise QuantizeError(f"precision {precision!r}: choose {', '.join(PRECISIONS)}")
    if precision == "int8":
        if calibration is None:
            raise QuantizeError("int8 needs calibration images: --calibration LIST_FILE_OR_DIR "
                                "(e.g. the training list)")
        try:
            calibration_paths(calibration, None)
        except FileNotFoundError as exc:
            raise QuantizeError(f"calibration images: {exc}") from exc
    elif calibration is not None:
        raise QuantizeError(f"--calibration is only used with int8, not {precision}")


def _held_out_split(calibration: str | Path, calibration_n: int, seed: int) -> tuple[list[Path], list[Path]]:
    """(`calibration_n` calibration images, up to 4 more held out to score the methods); with
    too few images to hold any out, the calibration images score too."""
    n_eval = min(4, max(1, calibration_n // 4))
    paths = calibration_paths(calibration, calibration_n + n_eval, seed)
    if len(paths) <= calibration_n:
        return paths, paths
    held = set(random.Random(seed + 1).sample(range(len(paths)), len(paths) - calibration_n))
    return [p for i, p in enumerate(paths) if i not in held], [paths[i] for i in sorted(held)]


def _int8_speedup(fp32: Path, int8: Path, batches: Sequence[np.ndarray], input_name: str, threads: int | None,
                  min_speedup: float | None) -> float:
    """fp32 / int8 time of one pass on the largest batch; refused below `min_speedup`."""
    probe = max(batches, key=lambda x: x.shape[2] * x.shape[3])
    t32 = time_pass(fp32, probe, input_name, threads)
    t8 = time_pass(int8, probe, input_name, threads)
    speedup = t32 / t8
    log.info("int8 vs fp32 on %s: %.3f s vs %.3f s per pass (%.2fx)", probe.shape, t8, t32, speedup)
    if min_speedup is not None and speedup < min_speedup:
        raise QuantizeError(
            f"int8 is not faster than fp32 on this machine ({t8:.3f} s vs {t32:.3f} s per pass, "
            f"{speedup:.2f}x < {min_speedup:g}x): keep the fp32 export")
    return speedup


def _apply_int8(graph: Path, out: Path, manifest: Manifest, calibration: str | Path | None, calibration_n: int,
                threads: int | None, seed: int, max_side: int | None, methods: Sequence[str],
                min_speedup: float | None) -> PrecisionInfo:
    """Quantize `graph` into `out` on the user's images; the manifest's PrecisionInfo for it."""
    from seam.modelrepo.precision import Calibration, PrecisionInfo

    if calibration is None:
        raise QuantizeError("int8 needs calibration images (--calibration LIST_OR_DIR)")
    paths, eval_paths = _held_out_split(calibration, calibration_n, seed)
    norm = Normalization(tuple(manifest.input.mean), tuple(manifest.input.std))
    working_side = getattr(manifest.input, "working_side", None)
    scales = _model_scales(manifest)
    cal = calibration_batches(paths, norm.mean, norm.std, scales, max_side, working_side)
    ev = calibration_batches(eval_paths, norm.mean, norm.std, (1.0,), max_side, working_side)
    input_name = manifest.input.name
    res = quantize_model(graph, out, cal, input_name, methods=methods, eval_batches=ev, threads=threads)
    speedup = _int8_speedup(graph, out, cal, input_name, threads, min_speedup)
    best = next(t for t in res.trials if t.method == res.method)
    return PrecisionInfo(
        weights="int8", provider="cpu", fp32_nodes=tuple(res.excluded_nodes),
        calibration=Calibration(
            source=str(calibration), images=len(paths), fingerprint=fingerprint(paths),
            scales=scales, max_side=max_side, method=res.method,
            method_errors={t.method: round(t.errors[res.score_output].rel_max, 6) for t in res.trials}),
        max_error={k: round(v.rel_max, 6) for k, v in best.errors.items()},
        speedup=round(speedup, 3),
    )


def _apply_fp16(graph: Path, out: Path, input_name: str, threads: int | None, seed: int) -> PrecisionInfo:
    """fp16 copy of `graph` at `out`, its error measured on CPU; the manifest's PrecisionInfo."""
    from seam.modelrepo.precision import PrecisionInfo

    kept = convert_fp16(graph, out)
    probe = np.random.default_rng(seed).standard_normal((1, 3, 67, 93)).astype(np.float32)
    try:
        errors = compare_outputs(graph, out, [probe], input_name, threads)
    except Exception as exc:  # noqa: BLE001 - a CPU build without fp16 kernels for some op
        log.warning("fp16 graph not checked on CPU: %s", exc)
        errors = {}
    return PrecisionInfo(weights="fp16", provider="cuda", fp32_nodes=tuple(kept),
                         max_error={k: round(v.rel_max, 6) for k, v in errors.items()})


def apply_precision(
    model_dir: str | Path,
    manifest: Manifest,
    precision: str,
    calibration: str | Path | None = None,
    calibration_n: int = DEFAULT_CALIBRATION_N,
    threads: int | None = None,
    seed: int = 0,
    max_side: int | None = DEFAULT_CALIBRATION_SIDE,
    methods: Sequence[str] = CALIBRATION_METHODS,
    min_speedup: float | None = None,
) -> Manifest:
    """Turn the fp32 graph of an exported model directory into `precision` in place and
    return the manifest updated to match (new sha256, `precision` section).

    int8 needs `calibration` (list file or directory); `calibration_n` images are drawn
    (seeded) for calibration and up to 4 more, held out, score the methods and time
    int8 against fp32 (on the largest calibration input; recorded as `speedup`). With
    `min_speedup`, int8 that is not that much faster than fp32 on this machine is
    refused. fp16 is meant for CUDA workers; its error is measured on CPU, its speed is
    not (CPUs have no fast fp16)."""
    from seam.modelrepo.manifest import Manifest

    model_dir = Path(model_dir)
    graph = model_dir / manifest.onnx.file
    check_precision_args(precision, calibration)
    if precision == "fp32":
        return manifest
    work = Path(tempfile.mkdtemp(prefix=".precision-", dir=model_dir))
    out = work / manifest.onnx.file
    try:
        if precision == "int8":
            info = _apply_int8(graph, out, manifest, calibration, calibration_n, threads, seed, max_side, methods,
                               min_speedup)
        else:
            info = _apply_fp16(graph, out, manifest.input.name, threads, seed)
        ext = _replace_graph(model_dir, out, manifest.onnx.file)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    data = manifest.model_dump()
    data["onnx"].update(sha256=file_sha256(graph), external_data=ext)
    data["precision"] = info.model_dump()
    return Manifest.model_validate(data)
