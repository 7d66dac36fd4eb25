"""Peak memory of one PCM-refined pass: the blocked PCM (now) vs the dense (hw x hw) one
(before), same network, same input, same process.

    python bench/pcm_memory.py --model models/seam-demo --image 1600x1200 --scale 2
    python bench/pcm_memory.py --image 400x300 --scale 2 --dense   # small enough to run both

Each variant runs in a fresh subprocess (peak RSS is per process); the dense variant is the
release's formula in numpy, run only with --dense and only when its affinity fits in
--dense-limit-gb (otherwise its requirement is printed, computed, not measured).
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import numpy as np


def _child(args: argparse.Namespace) -> None:
    import psutil
    from seam.service.engine.onnx_engine import OnnxEngine

    from seam.common.image import Normalization, resize_rgb, scaled_size

    eng = OnnxEngine.from_model_dir(args.model, providers="cpu", threads=args.threads, max_side=16384,
                                    memory_budget=1 << 40)
    m = eng.model("seam")
    w, h = (int(v) for v in args.image.split("x"))
    sh, sw = scaled_size((h, w), args.scale)
    rgb = np.random.default_rng(0).integers(0, 256, (h, w, 3), np.uint8)
    x = Normalization()(resize_rgb(rgb, (sh, sw)))[None]
    base = psutil.Process().memory_info().rss
    t0 = time.perf_counter()
    if args.variant == "blocked":
        cam, rv = eng._runner(m, refined=True)(x)
    else:
        cam, n, g = eng.run(m, x)
        B, C, hh, ww = n.shape
        g2 = g.reshape(B, g.shape[1], -1)[0]
        aff = np.maximum(g2.T @ g2, 0)  # (hw, hw): the release's dense affinity
        aff /= aff.sum(axis=0, keepdims=True) + 1e-5
        rv = (n.reshape(C, -1) @ aff).reshape(1, C, hh, ww)
    dt = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({"variant": args.variant, "seconds": dt, "peak_rss_mb": peak / 2**20,
                      "growth_mb": (peak - base) / 2**20, "hw": int(cam.shape[-1] * cam.shape[-2]),
                      "checksum": float(np.abs(rv).sum())}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="models/seam-demo")
    ap.add_argument("--image", default="1600x1200", help="WxH of the original image")
    ap.add_argument("--scale", type=float, default=2.0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--dense", action="store_true", help="also run the dense PCM when it fits")
    ap.add_argument("--dense-limit-gb", type=float, default=6.0)
    ap.add_argument("--variant", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.variant:
        _child(args)
        return
    from seam.common.cam import stride_size
    from seam.common.image import scaled_size

    w, h = (int(v) for v in args.image.split("x"))
    sh, sw = scaled_size((h, w), args.scale)
    hw = stride_size(sh) * stride_size(sw)
    dense_bytes = 4 * hw * hw
    print(f"{args.image} at scale {args.scale:g}: input {sw}x{sh}, {hw} stride-8 pixels; dense affinity "
          f"{dense_bytes / 2**30:.2f} GiB per image (before), blocked peak below")
    rows = {}
    variants = ["blocked"] + (["dense"] if args.dense and dense_bytes * 2 < args.dense_limit_gb * 2**30 else [])
    for v in variants:
        cmd = [sys.executable, __file__, "--variant", v, "--model", args.model, "--image", args.image,
               "--scale", str(args.scale), "--threads", str(args.threads)]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
        rows[v] = json.loads(out)
        r = rows[v]
        print(f"  {v:8s} peak RSS {r['peak_rss_mb']:8.1f} MiB (growth {r['growth_mb']:8.1f} MiB), {r['seconds']:.2f} s")
    if "dense" in rows:
        b, d = rows["blocked"], rows["dense"]
        print(f"  ratio dense/blocked growth: {d['growth_mb'] / max(b['growth_mb'], 1e-6):.1f}x; "
              f"same result: {abs(b['checksum'] - d['checksum']) / max(d['checksum'], 1e-9) < 1e-4}")
    else:
        print(f"  dense not run: it would need {dense_bytes / 2**30:.1f} GiB for the affinity alone "
              f"(ratio to the blocked growth: {dense_bytes / 2**20 / max(rows['blocked']['growth_mb'], 1):.0f}x)")


if __name__ == "__main__":
    main()
