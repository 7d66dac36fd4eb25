"""Images/s at batch 1 versus batched, same model, same process, same images.

    python bench/batching.py                                   # models/ (the demo model), 8 images 375x500
    python bench/batching.py --batch 4 --images 16 --threads 2 --size 375x500
    python bench/batching.py --engine fake                     # the plumbing only (no model)

Two levels, each run one-by-one and batched over the same images, alternating and
repeated (the best repeat is kept, so a noisy neighbour hurts both alike):
* engine:  `segment` per image vs `segment_many` in batches of --batch;
* service: `seam.service.realtime.compute.run_requests` (decode + engine + PNG encoding, what
  a worker does for a round of synchronous requests) with max_batch 1 vs --batch.
The ratio batched/one-by-one is what dynamic batching (SEAM_MAX_BATCH) buys on this
device; on a CPU whose threads a single image already keeps busy it can be below 1.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def scenes(n: int, h: int, w: int) -> list[np.ndarray]:
    """Smooth coloured shapes on a textured background (not noise: CAMs have something to find)."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:h, 0:w]
    out = []
    for _ in range(n):
        a = (rng.integers(0, 40, (h, w, 3)) + np.stack([xx * 80 // w, yy * 80 // h, (xx + yy) * 40 // (h + w)], -1))
        for _ in range(3):
            cy, cx, r = rng.integers(0, h), rng.integers(0, w), rng.integers(min(h, w) // 8, min(h, w) // 3)
            a[(yy - cy) ** 2 + (xx - cx) ** 2 < r * r] = rng.integers(60, 255, 3)
        out.append(np.clip(a, 0, 255).astype(np.uint8))
    return out


def seconds(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--engine", choices=["onnx", "fake"], default="onnx")
    ap.add_argument("--models-dir", default="models")
    ap.add_argument("--providers", default="auto")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--size", default="375x500", help="HxW of every image (batching groups same-size images)")
    ap.add_argument("--images", type=int, default=8)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--method", default=None)
    ap.add_argument("--repeat", type=int, default=2)
    args = ap.parse_args()
    h, w = (int(v) for v in args.size.lower().split("x"))

    if args.engine == "fake":
        from seam.service.fake_engine import FakeEngine

        engine = FakeEngine(delay_ms=20)
    else:
        from seam.service.engine.onnx_engine import OnnxEngine

        engine = OnnxEngine(args.models_dir, providers=args.providers, threads=args.threads)
    if not hasattr(engine, "segment_many"):
        sys.exit("this engine has no segment_many: nothing to compare")
    from seam.service.realtime.compute import run_requests
    from seam.service.realtime.messages import SyncRequest

    from seam.common.encoders import encode_png_rgb as png_rgb

    method = args.method or engine.methods()[0]
    imgs = scenes(args.images, h, w)
    names = engine.foreground_classes()
    req = SyncRequest(op="segment", fmt="png", method=method)
    items = [(req, png_rgb(a)) for a in imgs]
    B = args.batch

    def one_by_one() -> None:
        for a in imgs:
            engine.segment(a, method=method)

    def batched() -> None:
        for i in range(0, len(imgs), B):
            engine.segment_many(imgs[i:i + B], [None] * len(imgs[i:i + B]), method=method)

    # identical results first: batching must not change a label
    single = [engine.segment(a, method=method).label for a in imgs[:B]]
    many = [r.label for r in engine.segment_many(imgs[:B], [None] * len(imgs[:B]), method=method)]
    same = all(np.array_equal(x, y) for x, y in zip(single, many, strict=True))

    rows = []
    for level, f1, fb in (
        ("engine", one_by_one, batched),
        ("service", lambda: run_requests(engine, names, items, 10**9, 1),
         lambda: run_requests(engine, names, items, 10**9, B)),
    ):
        t1 = tb = float("inf")
        for _ in range(args.repeat):  # alternate so drift hurts both alike
            t1 = min(t1, seconds(f1))
            tb = min(tb, seconds(fb))
        rows.append((level, len(imgs) / t1, len(imgs) / tb))

    m = engine.models()[0]
    print(f"model {m.name} ({m.provider}), method {method}, {len(imgs)} images {w}x{h}, batch {B}, "
          f"threads {args.threads or 'default'}; batched labels identical to one-by-one: {same}")
    print(f"{'level':8s} {'batch 1 img/s':>14s} {'batch ' + str(B) + ' img/s':>14s} {'ratio':>7s}")
    for level, a, b in rows:
        print(f"{level:8s} {a:14.2f} {b:14.2f} {b / a:7.2f}x")


if __name__ == "__main__":
    main()
