"""int8 (static QDQ) against fp32 on CPU: speed, CAM error and pseudo-label mIoU.

Same process, same inputs: the fp32 export and its int8 copy (`training/export/int8.py`,
calibrated on images preprocessed as inference does) run interleaved, pass for pass;
each side's best-of-N time is the one least disturbed by other load on the machine.

    # speed + error per network pass (random weights; resnet38 = the authors' network)
    python bench/quantize.py --backbone resnet38_small --size 375x500
    python bench/quantize.py --backbone resnet38 --size 376x504 --calibration-n 4 --calibration-scales 1.0
    # a trained model: also multi-scale PCM pseudo labels on a VOC-layout set, mIoU fp32 vs int8
    python bench/quantize.py --checkpoint runs/demo/seam_final.pth \\
        --calibration data/synth/ImageSets/Segmentation/train.txt \\
        --miou data/synth --miou-n 100

The network pass is the backbone graph `model.onnx` (cam, pcm_n, pcm_g); the PCM product
(`pcm.onnx`) and all post-processing stay fp32 and are the same on both sides. The mIoU
part runs the whole engine (`OnnxEngine.segment(method="pcm")` with the image labels).
Achieved GMAC/s are printed against this machine's matmul peaks measured in the same run.
"""
from __future__ import annotations

import argparse
import json
import logging
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

REPO = Path(__file__).resolve().parents[1]

if TYPE_CHECKING:
    from seam.modelrepo.manifest import Manifest


def authors_resnet38_checkpoint(path: Path, keys_json: Path) -> None:
    """Random weights under the authors' exact keys, built as the export tests build them:
    BN at identity, convs scaled by sqrt(0.5 / fan_in) so 38 layers keep a sane range."""
    import torch

    from testkit.checkpoints import authors_resnet38_state_dict

    torch.save(authors_resnet38_state_dict(json.loads(keys_json.read_text())["seam"]), path)


def interleaved_times(sessions: dict, x: np.ndarray, input_name: str, rounds: int) -> dict[str, list[float]]:
    """Alternate the sessions pass by pass so that drifting load hits both alike."""
    for s in sessions.values():
        s.run(None, {input_name: x})  # warm-up
    times: dict[str, list[float]] = {k: [] for k in sessions}
    for _ in range(rounds):
        for k, s in sessions.items():
            t0 = time.perf_counter()
            s.run(None, {input_name: x})
            times[k].append(time.perf_counter() - t0)
    return times


def miou_run(engine, data: Path, ids: list[str], foreground: list[str]) -> tuple[dict, list[np.ndarray], float]:
    from PIL import Image

    from seam.common.files import load_label_file
    from seam.common.image import load_rgb
    from seam.common.metrics import ConfusionMeter

    labels = load_label_file(data / "cls_labels.npy", foreground)
    meter = ConfusionMeter(len(foreground) + 1)
    maps = []
    t0 = time.perf_counter()
    for i in ids:
        rgb = load_rgb(data / "JPEGImages" / f"{i}.jpg")
        seg = engine.segment(rgb, labels=labels[i], method="pcm")
        gt = np.asarray(Image.open(data / "SegmentationClass" / f"{i}.png"))
        meter.update(seg.label, gt)
        # clipped: the release's normalisation gives -1 where a class's summed map is all zero
        maps.append(np.clip(seg.cams.cams, 0, 1) if seg.cams is not None else np.zeros(0))
    return meter.scores(["background", *foreground]), maps, time.perf_counter() - t0


def _parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--backbone", default="resnet38_small", help="resnet38_small or resnet38 (random weights)")
    ap.add_argument("--checkpoint", type=Path, help="a trained SEAM checkpoint instead of random weights")
    ap.add_argument("--size", default="375x500", help="HxW of the timed input (a held-out image resized)")
    ap.add_argument("--rounds", type=int, default=5, help="timed passes per side (interleaved)")
    ap.add_argument("--calibration", type=Path, help="list file or image directory (default: synthetic images)")
    ap.add_argument("--calibration-n", type=int, default=48)
    ap.add_argument("--calibration-scales", default=None, help="default: the manifest's CAM scales")
    ap.add_argument("--calibration-side", type=int, default=512, help="long-side cap of calibration inputs")
    ap.add_argument("--methods", default="minmax,entropy,percentile")
    ap.add_argument("--op-types", default=None, help="op types quantized (default: Conv,Relu)")
    ap.add_argument("--keep-all-convs-int8", action="store_true", help="quantize the head convolutions too")
    ap.add_argument("--miou", type=Path, help="a VOC-layout data set (seam synth): pseudo-label mIoU fp32 vs int8")
    ap.add_argument("--miou-n", type=int, default=100, help="images of its train list scored")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--keys", type=Path, default=REPO.parent / "shared" / "reference" / "official-state-dict-keys.json")
    ap.add_argument("--json", type=Path, help="also write the numbers here")
    return ap.parse_args()


def _checkpoint(args: argparse.Namespace, tmp: Path) -> Path:
    """--checkpoint, else random weights saved under `tmp` (resnet38: the authors' keys)."""
    from testkit.checkpoints import make_checkpoint

    if args.checkpoint:
        return args.checkpoint
    if args.backbone == "resnet38":
        ckpt = tmp / "resnet38_SEAM.pth"
        authors_resnet38_checkpoint(ckpt, args.keys)
        return ckpt
    ckpt = tmp / "seam_random.pth"
    make_checkpoint(ckpt, "seam", args.backbone, 21)
    return ckpt


def _inputs(args: argparse.Namespace, mf: Manifest) -> tuple[list[np.ndarray], list[np.ndarray], np.ndarray,
                                                              tuple[float, ...]]:
    """(calibration batches, held-out evaluation batches, the timed input, the calibration
    scales), preprocessed as the engine does."""
    from seam.training.export.calibration import calibration_batches, calibration_paths, preprocess

    from bench.inference import synthetic_images
    from seam.common.image import Normalization, load_rgb, resize_rgb

    norm = Normalization(tuple(mf.input.mean), tuple(mf.input.std))
    h, w = (int(v) for v in args.size.lower().split("x"))
    scales = (tuple(float(s) for s in args.calibration_scales.split(","))
              if args.calibration_scales else tuple(mf.cam.scales))
    if args.calibration:
        paths = calibration_paths(args.calibration, args.calibration_n + 2, seed=0)
        cal = calibration_batches(paths[:-2] or paths, norm.mean, norm.std, scales, args.calibration_side,
                                  mf.input.working_side)
        eval_imgs = [load_rgb(p) for p in paths[-2:]]
    else:
        imgs = synthetic_images(args.calibration_n + 2, h, w, seed=1)
        cal = [preprocess(im, s, norm, mf.input.working_side, args.calibration_side)
               for im in imgs[:-2] for s in scales]
        eval_imgs = imgs[-2:]
    ev = [preprocess(im, 1.0, norm, mf.input.working_side) for im in eval_imgs]
    # the timed input: a held-out image of the calibration distribution at --size
    timed = preprocess(resize_rgb(eval_imgs[0], (h, w)), 1.0, norm)
    return cal, ev, timed, scales


def _quantize(args: argparse.Namespace, fp32: Path, int8: Path, cal: list[np.ndarray], ev: list[np.ndarray],
              input_name: str, scales: tuple[float, ...], threads: int) -> dict:
    """int8 copy of `fp32` at `int8`; prints each calibration method's CAM error and
    returns the record of the run."""
    from seam.training.export.int8 import quantize_model

    t0 = time.perf_counter()
    q = quantize_model(fp32, int8, cal, input_name, methods=args.methods.split(","), eval_batches=ev,
                       keep_heads_fp32=not args.keep_all_convs_int8, threads=threads,
                       **({"op_types": tuple(args.op_types.split(","))} if args.op_types else {}))
    seconds = time.perf_counter() - t0
    print(f"quantized in {seconds:.0f} s ({len(cal)} calibration batches, scales {scales}); "
          f"{len(q.quantized_nodes)} convs int8, fp32: {q.excluded_nodes}")
    for t in q.trials:
        e = t.errors["cam"]
        print(f"  {t.method:10s} cam: max |int8 - fp32| / max |fp32| = {e.rel_max:.4f}, "
              f"mean {e.rel_mean:.5f}" + ("   <- kept" if t.method == q.method else ""))
    return {"quantize": q.as_dict(), "quantize_seconds": seconds}


def _time_pass(fp32: Path, int8: Path, timed: np.ndarray, input_name: str, rounds: int, threads: int) -> dict:
    """One network pass on each graph, interleaved, its CAM error, and the matmul peaks
    measured just before and after."""
    from seam.training.export.compare import compare_outputs

    from bench.hardware import conv_macs, matmul_peak
    from seam.modelrepo.runtime import cpu_session

    peak_before = matmul_peak(threads)
    sess = {"fp32": cpu_session(fp32, threads), "int8": cpu_session(int8, threads)}
    times = interleaved_times(sess, timed, input_name, rounds)
    peak_after = matmul_peak(threads)
    del sess
    err = compare_outputs(fp32, int8, [timed], input_name, threads)["cam"]
    best = {k: min(v) for k, v in times.items()}
    med = {k: statistics.median(v) for k, v in times.items()}
    return {"shape": list(timed.shape), "gmac": conv_macs(fp32, timed.shape) / 1e9, "best_s": best, "median_s": med,
            "speedup_best": best["fp32"] / best["int8"], "speedup_median": med["fp32"] / med["int8"],
            "cam_rel_max": err.rel_max, "cam_rel_mean": err.rel_mean,
            "peak_gmacs_before": peak_before, "peak_gmacs_after": peak_after}


def _print_pass(p: dict, threads: int, rounds: int) -> None:
    """`_time_pass`'s record as achieved GMAC/s against the matmul peaks."""
    macs = p["gmac"] * 1e9
    before, after = p["peak_gmacs_before"], p["peak_gmacs_after"]
    print(f"one pass {p['shape'][2]}x{p['shape'][3]} ({macs / 1e9:.1f} GMAC), {threads} threads, "
          f"{rounds} interleaved rounds:")
    for k in ("fp32", "int8"):
        key = "ort_fp32_matmul" if k == "fp32" else "ort_u8s8_matmul"
        peak = max(before[key], after[key])
        best, med = p["best_s"][k], p["median_s"][k]
        print(f"  {k}: best {best:.3f} s, median {med:.3f} s -> {macs / best / 1e9:.1f} GMAC/s "
              f"({100 * macs / best / 1e9 / peak:.0f} % of the {k} matmul peak {peak:.0f} GMAC/s)")
    print(f"  int8 / fp32 speed: {p['speedup_best']:.2f}x (best), "
          f"{p['speedup_median']:.2f}x (median); cam max rel diff {p['cam_rel_max']:.4f}")
    print("  matmul peaks GMAC/s before/after: " + ", ".join(f"{k} {before[k]:.0f}/{after[k]:.0f}" for k in before))


def _int8_model_dir(fp32_dir: Path, int8: Path, tmp: Path) -> Path:
    """A copy of the fp32 model directory with the int8 graph and a manifest to match. The fp32
    graph's files (`model.onnx` and, for large weights, `model.onnx.data`) are replaced by the
    int8 graph's own: quantize_model writes a `.data` file exactly when the fp32 graph has one,
    and the int8 graph must not read its weights out of the fp32 one's."""
    from seam.modelrepo.manifest import Manifest, file_sha256, load_model_dir

    int8_dir = tmp / "models_int8" / "int8"
    shutil.copytree(fp32_dir, int8_dir, ignore=shutil.ignore_patterns(f"{int8.name}*"))
    for f in int8.parent.glob(f"{int8.name}*"):
        shutil.copy2(f, int8_dir / f.name)
    data = load_model_dir(fp32_dir).model_dump()
    data["onnx"]["sha256"] = file_sha256(int8_dir / int8.name)
    data["onnx"]["external_data"] = {f.name: file_sha256(f) for f in int8_dir.glob(f"{int8.name}.data")}
    (int8_dir / "manifest.json").write_text(Manifest.model_validate(data).to_json())
    return int8_dir


def _miou(args: argparse.Namespace, mf: Manifest, fp32_dir: Path, int8_dir: Path, threads: int) -> dict:
    """Whole-engine pseudo labels of both model directories on --miou's train list; prints them."""
    from seam.service.engine.onnx_engine import OnnxEngine

    listing = (args.miou / "ImageSets" / "Segmentation" / "train.txt").read_text()
    ids = [ln.split()[0] for ln in listing.split("\n") if ln.strip()][: args.miou_n]
    results, maps = {}, {}
    for k, d in (("fp32", fp32_dir), ("int8", int8_dir)):
        eng = OnnxEngine.from_model_dir(d, providers="cpu", threads=threads)
        results[k], maps[k], secs = miou_run(eng, args.miou, ids, list(mf.class_names[1:]))
        results[k]["seconds"] = secs
        del eng
    pairs = [(a, b) for a, b in zip(maps["fp32"], maps["int8"], strict=False) if a.size]
    diff = max(float(np.abs(a - b).max()) for a, b in pairs)
    mean_diff = float(np.mean([np.abs(a - b).mean() for a, b in pairs]))
    miou = {"images": len(ids), "fp32": results["fp32"]["miou"], "int8": results["int8"]["miou"],
            "delta": results["int8"]["miou"] - results["fp32"]["miou"],
            "max_cam_map_diff": diff, "mean_cam_map_diff": mean_diff,
            "seconds": {k: results[k]["seconds"] for k in results}}
    print(f"pseudo labels (method pcm, image labels, scales {tuple(mf.cam.scales)} + flip) on {len(ids)} "
          f"images of {args.miou}:")
    print(f"  mIoU fp32 {miou['fp32']:.2f} %, int8 {miou['int8']:.2f} % (delta {miou['delta']:+.2f}); "
          f"|normalised CAM int8 - fp32| max {diff:.3f}, mean {mean_diff:.4f}")
    secs = miou["seconds"]
    print(f"  whole engine: fp32 {secs['fp32']:.1f} s, int8 {secs['int8']:.1f} s ({secs['fp32'] / secs['int8']:.2f}x)")
    return miou


def main() -> None:
    args = _parse_args()
    logging.basicConfig(level=logging.WARNING)

    import torch
    from seam.training.export import export_model

    from seam.modelrepo.runtime import default_threads

    threads = args.threads or default_threads()
    torch.set_num_threads(threads)
    tmp_dir = tempfile.TemporaryDirectory(prefix="seam-bench-quant-")
    tmp = Path(tmp_dir.name)
    out: dict = {"threads": threads}
    try:
        ckpt = _checkpoint(args, tmp)
        t0 = time.perf_counter()
        res = export_model(ckpt, "seam", "fp32", tmp / "models", check_shapes=[(1, 3, 37, 61)], threads=threads)
        mf = res.manifest
        out["backbone"] = mf.backbone
        print(f"exported {mf.backbone} in {time.perf_counter() - t0:.0f} s; outputs {list(mf.onnx.outputs)}")
        fp32 = res.model_dir / mf.onnx.file
        cal, ev, timed, scales = _inputs(args, mf)
        int8 = tmp / "int8" / mf.onnx.file
        int8.parent.mkdir()
        out.update(_quantize(args, fp32, int8, cal, ev, mf.input.name, scales, threads))
        out["pass"] = _time_pass(fp32, int8, timed, mf.input.name, args.rounds, threads)
        _print_pass(out["pass"], threads, args.rounds)
        if args.miou:
            out["miou"] = _miou(args, mf, res.model_dir, _int8_model_dir(res.model_dir, int8, tmp), threads)
        if args.json:
            args.json.write_text(json.dumps(out, indent=2, default=float))
    finally:
        tmp_dir.cleanup()


if __name__ == "__main__":
    main()
