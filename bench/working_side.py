"""Accuracy, time and memory of the working resolution: the same synthetic scenes rendered
large, segmented with the long side capped at several `max_side` values vs native.

    python bench/working_side.py [--model models/seam-demo] [--size 640] [--n 40]
                                 [--sides 160,200,320,480,native]

Images come from `seam synth`'s renderer (seed 123, not the demo's training seed) at
`--size` pixels; labels are given (pseudo-label setting), method pcm, the model's
threshold. mIoU is scored at the original size against the full-size ground truth
(255 ignored). Time is the median per image; memory is the engine's admission estimate.
"""
from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
from seam.service.engine.onnx_engine import OnnxEngine
from seam.training.data.synth import IGNORE_INDEX, SYNTH_CLASSES, render_image

from seam.common.metrics import ConfusionMeter, scores_from_confusion


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="models/seam-demo")
    ap.add_argument("--size", type=int, default=640)
    ap.add_argument("--n", type=int, default=40)
    ap.add_argument("--sides", default="160,200,320,480,native")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=123)
    args = ap.parse_args()
    eng = OnnxEngine.from_model_dir(args.model, providers="cpu", threads=args.threads, memory_budget=1 << 40)
    scenes = [render_image(np.random.default_rng([args.seed, i]), args.size)[:2] for i in range(args.n)]
    working = eng.model("seam").manifest.input.working_side
    print(f"{args.n} synthetic scenes at {args.size}x{args.size}; {args.model} working side {working}")
    print(f"{'max_side':>9} {'mIoU %':>7} {'s/image':>8} {'est. MiB':>9}")
    for side in args.sides.split(","):
        max_side = args.size if side == "native" else int(side)
        meter = ConfusionMeter(len(SYNTH_CLASSES))
        times = []
        for rgb, gt in scenes:
            labels = [int(c) - 1 for c in np.unique(gt) if 0 < c != IGNORE_INDEX]
            t0 = time.perf_counter()
            seg = eng.segment(rgb, labels, method="pcm", max_side=max_side)
            times.append(time.perf_counter() - t0)
            meter.update(seg.label, gt)
        miou = scores_from_confusion(meter.matrix, SYNTH_CLASSES)["miou"]
        est = eng.estimate((args.size, args.size), "pcm", max_side=max_side).needed_bytes / 2**20
        print(f"{side:>9} {miou:7.2f} {statistics.median(times):8.3f} {est:9.1f}")


if __name__ == "__main__":
    main()
