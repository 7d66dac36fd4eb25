"""Sparse vs dense (the authors') AffinityNet random walk on identical inputs.

    python bench/random_walk.py [--sizes 375x500,500x375,333x500] [--repeat 3] [--dim 448]

Inputs per image size: a random feature map at the stride-8 grid (piecewise
constant region embeddings + noise, so affinities look like a trained
AffinityNet's: high inside regions, low across) and random smooth CAMs for two
classes. Both methods share the feature -> affinity step; the timings are given
for the walk alone (A -> T, propagate) and end to end (`random_walk_labels`,
features to label map). Prints the speed ratios and the share of identically
labelled pixels at image resolution.
"""
from __future__ import annotations

import argparse
import json
import time

import numpy as np

from seam.common.cam import resize_bilinear
from seam.common.random_walk import (
    affinity_from_features,
    grid_size,
    pooled_cams,
    random_walk_labels,
    random_walk_scores,
    upsample_argmax,
)


def make_inputs(rng: np.random.Generator, H: int, W: int, dim: int, regions: int = 12):
    h, w = grid_size(H), grid_size(W)
    yy, xx = np.mgrid[:h, :w]
    centres = rng.uniform(0, [h, w], size=(regions, 2))
    seg = ((yy[..., None] - centres[:, 0]) ** 2 + (xx[..., None] - centres[:, 1]) ** 2).argmin(-1)
    emb = rng.normal(0, 1, (regions, dim))
    feat = (emb[seg] + 0.3 * rng.normal(0, 1, (h, w, dim))).transpose(2, 0, 1).astype(np.float32)
    low = rng.uniform(0, 1, (2, max(2, H // 40), max(2, W // 40))).astype(np.float32)
    cams = np.clip(resize_bilinear(low, (H, W), align_corners=True) ** 2, 0, 1)
    return feat, cams, [3, 14]


def timed(fn, repeat: int) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def bench_size(H: int, W: int, dim: int, repeat: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    feat, cams, classes = make_inputs(rng, H, W, dim)
    h, w = feat.shape[1:]
    grid = pooled_cams(cams, (h, w))
    aff = affinity_from_features(feat)
    t_sparse, s_sparse = timed(lambda: random_walk_scores(grid, aff), repeat)
    t_dense, s_dense = timed(lambda: random_walk_scores(grid, aff, dense=True), max(1, repeat - 1))
    e_sparse, l_sparse = timed(lambda: random_walk_labels(feat, cams, classes, (H, W)), repeat)
    e_dense, l_dense = timed(lambda: random_walk_labels(feat, cams, classes, (H, W), dense=True), 1)
    same_walk = (upsample_argmax(s_sparse, (H, W), classes) == upsample_argmax(s_dense, (H, W), classes)).mean()
    return {
        "image": f"{H}x{W}", "grid": f"{h}x{w}", "n": h * w, "nnz_per_row": aff.nnz / (h * w),
        "walk_sparse_s": t_sparse, "walk_dense_s": t_dense, "walk_speedup": t_dense / t_sparse,
        "e2e_sparse_s": e_sparse, "e2e_dense_s": e_dense, "e2e_speedup": e_dense / e_sparse,
        "identical_pixels": float(min(same_walk, (l_sparse == l_dense).mean())),
        "max_abs_score_diff": float(np.abs(s_sparse - s_dense).max()),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="375x500,500x375,333x500,281x500")
    ap.add_argument("--dim", type=int, default=448, help="feature channels (AffinityNet: 448)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    args = ap.parse_args()
    rows = []
    for i, s in enumerate(args.sizes.split(",")):
        H, W = (int(v) for v in s.lower().split("x"))
        rows.append(bench_size(H, W, args.dim, args.repeat, args.seed + i))
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    print(f"{'image':>9} {'grid':>7} {'nnz/row':>7} | {'walk sparse':>11} {'dense':>8} {'ratio':>6} | "
          f"{'e2e sparse':>10} {'dense':>8} {'ratio':>6} | identical")
    for r in rows:
        print(f"{r['image']:>9} {r['grid']:>7} {r['nnz_per_row']:7.1f} | {r['walk_sparse_s'] * 1e3:9.1f}ms "
              f"{r['walk_dense_s']:7.2f}s {r['walk_speedup']:5.0f}x | {r['e2e_sparse_s'] * 1e3:8.1f}ms "
              f"{r['e2e_dense_s']:7.2f}s {r['e2e_speedup']:5.0f}x | {100 * r['identical_pixels']:.4f}%")
    walk = np.exp(np.mean([np.log(r["walk_speedup"]) for r in rows]))
    e2e = np.exp(np.mean([np.log(r["e2e_speedup"]) for r in rows]))
    same = min(r["identical_pixels"] for r in rows)
    print(f"geometric mean speed-up: walk {walk:.0f}x, end to end {e2e:.0f}x; "
          f"identical labels >= {100 * same:.4f}%")


if __name__ == "__main__":
    main()
