"""int8 calibration: the user's images preprocessed exactly as inference preprocesses them
(bicubic rescale to each manifest scale, `Normalization`), and the activation ranges of
every calibration method from one pass over them (`calibrate`)."""
from __future__ import annotations

import contextlib
import io
import random
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from seam.training.export.graph_edits import QuantizeError

from seam.common.cam import working_size
from seam.common.files import list_images
from seam.common.image import Normalization, load_rgb, resize_rgb, scaled_size

CALIBRATION_METHODS: tuple[str, ...] = ("minmax", "entropy", "percentile")


DEFAULT_CALIBRATION_N = 48  # demo model: mIoU -0.33 with 48 images, -0.58 with 16 (docs/models.md)


DEFAULT_CALIBRATION_SIDE = 512  # long side of calibration inputs after scaling (memory, time)


def calibration_paths(source: str | Path, n: int | None = DEFAULT_CALIBRATION_N, seed: int = 0) -> list[Path]:
    """Images for calibration from a directory or a list file (`seam.common.files.list_images`).

    With `n` below the number available, a seeded random sample (lists are often
    sorted by class or date, so the first n would be a biased set)."""
    items = [p for _, p in list_images(source)]
    if n is not None:
        if n < 1:
            raise QuantizeError("--calibration-n must be >= 1")
        if n < len(items):
            items = sorted(random.Random(seed).sample(items, n))
    return items


def preprocess(rgb: np.ndarray, scale: float, norm: Normalization, working_side: int | None = None,
               max_side: int | None = None) -> np.ndarray:
    """One network input (1, 3, h, w) float32, as the engine builds it for one scale: the
    long side capped at the model's working side, bicubic rescale by `scale`,
    normalisation. `max_side` additionally caps the scaled input (calibration memory)."""
    rgb = resize_rgb(rgb, working_size(rgb.shape[:2], working_side))
    size = working_size(scaled_size(rgb.shape[:2], scale), max_side)
    return norm(resize_rgb(rgb, size))[None]


def calibration_batches(
    paths: Sequence[str | Path],
    mean: Sequence[float],
    std: Sequence[float],
    scales: Sequence[float] = (1.0,),
    max_side: int | None = DEFAULT_CALIBRATION_SIDE,
    working_side: int | None = None,
) -> list[np.ndarray]:
    """Each image at each scale as one (1, 3, h, w) batch (sizes differ: no padding).

    `max_side` bounds the calibration pass's memory: the histogram methods see every
    convolution's full output at once (ResNet-38: ~4 kB per input pixel)."""
    norm = Normalization(tuple(mean), tuple(std))  # type: ignore[arg-type]
    out = []
    for p in paths:
        rgb = load_rgb(p)
        out.extend(preprocess(rgb, s, norm, working_side, max_side) for s in scales)
    if not out:
        raise QuantizeError("no calibration images")
    return out


class _Reader:
    """onnxruntime CalibrationDataReader over in-memory batches, for running onnxruntime's
    own calibrators (the tests compare `calibrate` with them). `set_range` feeds them one
    batch at a time, as `quantize_static`'s `CalibStridedMinMax` does: in one call the
    histogram calibrators keep every intermediate tensor of every batch in memory and
    cannot stack inputs of different sizes."""

    def __init__(self, batches: Sequence[np.ndarray], input_name: str) -> None:
        self.batches = list(batches)
        self.input_name = input_name
        self.set_range(0, len(self.batches))

    def __len__(self) -> int:
        return len(self.batches)

    def set_range(self, start_index: int, end_index: int) -> None:
        self._it = iter(self.batches[start_index:end_index])

    def get_next(self) -> dict[str, np.ndarray] | None:
        x = next(self._it, None)
        return None if x is None else {self.input_name: x}


def calibrate(
    src: Path,
    batches: Sequence[np.ndarray],
    input_name: str,
    methods: Sequence[str],
    work_dir: Path,
    external: bool,
    op_types: Sequence[str] = ("Conv",),
) -> dict:
    """Ranges of the inputs/outputs of every `op_types` node for each method, from ONE pass over the
    batches: the histogram calibrator's augmented graph exposes the full tensors, which
    feed a running min/max (MinMax) and onnxruntime's own histogram collectors (Entropy,
    Percentile, with the defaults `quantize_static` uses). Three separate calibrations
    would run the network three times. One batch's tensors are in memory at a time.
    Returns {method: onnxruntime TensorsData}."""
    from onnxruntime.quantization.calibrate import (
        CalibrationMethod,
        HistogramCollector,
        TensorsData,
        create_calibrator,
    )

    cal = create_calibrator(src, list(op_types), augmented_model_path=str(work_dir / "augmented.onnx"),
                            calibrate_method=CalibrationMethod.Entropy, use_external_data_format=external)
    names = [o.name for o in cal.infer_session.get_outputs()]
    wanted = set(cal.tensors_to_calibrate)
    collectors = {
        "entropy": HistogramCollector("entropy", False, 128, 128, 99.999, "same"),
        "percentile": HistogramCollector("percentile", True, 2048, 128, 99.999, "same"),
    }
    lo: dict[str, np.ndarray] = {}
    hi: dict[str, np.ndarray] = {}
    with contextlib.redirect_stdout(io.StringIO()):  # the collectors print progress lines
        for x in batches:
            outs = dict(zip(names, cal.infer_session.run(None, {input_name: x}), strict=True))
            tensors = {n: a for n, a in outs.items() if n in wanted}
            for n, a in tensors.items():
                amin, amax = np.nanmin(a), np.nanmax(a)
                lo[n] = np.minimum(lo[n], amin) if n in lo else amin
                hi[n] = np.maximum(hi[n], amax) if n in hi else amax
            for m in methods:
                if m in collectors:
                    collectors[m].collect(tensors)
            del outs, tensors
        ranges = {}
        for m in methods:
            if m == "minmax":
                # shaped (1,) as MinMaxCalibrater's ReduceMin/ReduceMax outputs
                ranges[m] = TensorsData(CalibrationMethod.MinMax,
                                        {n: (np.reshape(lo[n], 1), np.reshape(hi[n], 1)) for n in lo})
            else:
                cm = CalibrationMethod.Entropy if m == "entropy" else CalibrationMethod.Percentile
                ranges[m] = TensorsData(cm, collectors[m].compute_collection_result())
    del cal
    return ranges
