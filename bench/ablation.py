"""Table 1 / Fig. 6 on a synthetic set: the CAM baseline vs SEAM, same data, budget and seeds.

Each row trains from the same random initialisation (same seed) for the same number
of epochs on the same images, then scores multi-scale CAM pseudo labels on the
training images (the paper's protocol: image labels known, background threshold swept
0.00..0.59, best mIoU reported) with m_FN / m_FP (eq. 13-14) along the sweep. Raw-CAM
rows are scored as the authors score raw CAMs (psa's infer_cls: relu per pass, divide
by the max), PCM rows as infer_SEAM (seam.training.trainers.cam_eval).

    python bench/ablation.py --out runs/ablation                    # baseline vs SEAM
    python bench/ablation.py --rows baseline,er,er+pcm,seam          # all Table 1 rows
    python bench/ablation.py --recipes release,tuned --seeds 0,1,2   # each row x recipe x seed
    python bench/ablation.py --data /tmp/synth --epochs 25 --threads 1

Rows: baseline (--no-er --no-pcm: one branch, raw CAM), er (--no-pcm: siamese + ER,
raw CAM), er+pcm (--no-ohem), seam (everything; PCM-refined CAM), seam-peak (SEAM
with the pre-fix max_norm that divides by the max only). Recipes
(seam.training.trainers.recipes): the optimiser and precision come from the recipe; the data
sizes (crop, resize range, jitter, epochs) are this script's, so the rows differ only
in what the recipe changes (momentum 5e-4 vs 0.9 on CPU).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

ROWS = {
    "baseline": dict(er=False, pcm=False),
    "er": dict(er=True, pcm=False),
    "er+pcm": dict(er=True, pcm=True, ohem=False),
    "seam": dict(er=True, pcm=True, ohem=True),
    "seam-peak": dict(er=True, pcm=True, ohem=True, cam_norm="peak"),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=None, help="synthetic set (generated when absent)")
    ap.add_argument("--n", type=int, default=200, help="images to generate when --data is absent")
    ap.add_argument("--synth-seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path("runs/ablation"))
    ap.add_argument("--rows", default="baseline,seam")
    ap.add_argument("--backbone", default="resnet38_small")
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--lr", type=float, default=None, help="default: the recipe's")
    ap.add_argument("--recipes", default="tuned", help="comma list of release, tuned")
    ap.add_argument("--seeds", default=None, help="comma list of seeds (default: --seed)")
    ap.add_argument("--crop", type=int, default=160)
    ap.add_argument("--resize-range", default="160,200")
    ap.add_argument("--jitter", default="0.3,0.3,0.3,0", help="no hue jitter: synthetic classes differ by colour")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--eval-scales", default="0.5,1.0,1.5,2.0")
    ap.add_argument("--eval-n", type=int, default=None, help="score only the first N training images")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--device", default=None)
    args = ap.parse_args()

    from seam.training.data.synth import generate
    from seam.training.trainers.seam import TrainConfig, train

    rows = [r.strip() for r in args.rows.split(",") if r.strip()]
    unknown = [r for r in rows if r not in ROWS]
    if unknown:
        ap.error(f"unknown rows {unknown}; choose from {', '.join(ROWS)}")
    data = args.data
    if data is None:
        data = args.out / f"synth_n{args.n}_s{args.synth_seed}"
    if not (data / "cls_labels.npy").is_file():
        print(f"generating {args.n} synthetic images in {data}", file=sys.stderr)
        generate(data, n=args.n, seed=args.synth_seed)
    lo, hi = (int(v) for v in args.resize_range.split(","))
    recipes = [r.strip() for r in args.recipes.split(",") if r.strip()]
    seeds = [int(v) for v in args.seeds.split(",")] if args.seeds else [args.seed]
    eval_list = None
    if args.eval_n:
        ids = (data / "ImageSets" / "Segmentation" / "train.txt").read_text().split()[:args.eval_n]
        eval_list = args.out / f"eval_first{args.eval_n}.txt"
        args.out.mkdir(parents=True, exist_ok=True)
        eval_list.write_text("\n".join(ids) + "\n")
    summary_path = args.out / "ablation.json"
    old = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
    results = old.get("runs", {})  # resumable: finished runs are kept and skipped
    for seed in seeds:
        for recipe in recipes:
            for row in rows:
                key = f"{row}/{recipe}/s{seed}"
                if key in results:
                    continue
                cfg = TrainConfig.from_recipe(
                    recipe, data=str(data), dataset="synth", backbone=args.backbone, batch_size=args.batch_size,
                    epochs=args.epochs, lr=args.lr, crop=args.crop, resize_long=(lo, hi),
                    jitter=tuple(float(v) for v in args.jitter.split(",")), out=str(args.out / key), seed=seed,
                    threads=args.threads, device=args.device, eval_list=str(eval_list) if eval_list else None,
                    eval_scales=tuple(float(v) for v in args.eval_scales.split(",")), **ROWS[row])
                print(f"== {key}: {json.dumps(ROWS[row])}", file=sys.stderr)
                t0 = time.time()
                side = train(cfg, log=lambda m: print("  " + m, file=sys.stderr))
                ev = side["metrics"]["eval"]
                results[key] = {
                    "row": row, "recipe": recipe, "seed": seed,
                    "miou": ev["miou"], "best_threshold": ev["best_threshold"], "mfn": ev["mfn"], "mfp": ev["mfp"],
                    "all_background_miou": ev["all_background_miou"], "per_class": ev["per_class"],
                    "final_cls_loss": side["metrics"]["final"]["cls"], "train_seconds": side["training"]["seconds"],
                    "total_seconds": round(time.time() - t0, 1), "curve": ev["curve"], "refined": ev["refined"],
                    "momentum": side["training"]["momentum"],
                }
                summary = {"data": str(data), "settings": {k: str(v) for k, v in vars(args).items()},
                           "runs": results}
                args.out.mkdir(parents=True, exist_ok=True)
                summary_path.write_text(json.dumps(summary, indent=2) + "\n")
    _print(results)
    print(f"\nwritten {summary_path}")


def _f(v, spec=".3f") -> str:
    return "n/a" if v is None else format(v, spec)


def _stats(vals: list[float]) -> str:
    a = np.asarray([v for v in vals if v is not None], dtype=float)
    if a.size == 0:
        return "n/a"
    return f"{a.mean():.2f} ± {a.std(ddof=1):.2f}" if a.size > 1 else f"{a.mean():.2f}"


def _print(results: dict) -> None:
    print(f"\n{'run':<24} {'mIoU %':>7} {'thr':>5} {'mFN':>7} {'mFP':>6} {'cls loss':>8} {'train s':>8}")
    for key, r in results.items():
        print(f"{key:<24} {r['miou']:7.2f} {r['best_threshold']:5.2f} {_f(r['mfn']):>7} {_f(r['mfp']):>6} "
              f"{r['final_cls_loss']:8.4f} {r['train_seconds']:8.1f}")
    first = next(iter(results.values()))
    print(f"(all-background mIoU {first['all_background_miou']:.2f}%)")
    groups: dict[tuple[str, str], list[dict]] = {}
    for r in results.values():
        groups.setdefault((r["row"], r["recipe"]), []).append(r)
    print("\nmean ± std over seeds (sample std)")
    print(f"{'row':<10} {'recipe':<8} {'seeds':>5} {'mIoU %':>14} {'mFN':>14} {'mFP':>14}")
    for (row, recipe), rs in groups.items():
        print(f"{row:<10} {recipe:<8} {len(rs):>5} {_stats([r['miou'] for r in rs]):>14} "
              f"{_stats([r['mfn'] for r in rs]):>14} {_stats([r['mfp'] for r in rs]):>14}")


if __name__ == "__main__":
    main()
