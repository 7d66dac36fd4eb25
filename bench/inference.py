"""Multi-scale CAM inference speed: the onnxruntime engine vs the authors' eager loop.

Both sides run the same weights on the same images in this process and produce
the same maps (checked): scales 0.5-2.0 with flips, PCM (cam_rv) CAMs masked by the
image labels, summed and min-max normalised.

- eager: the authors' `infer_SEAM` as written (`testkit/authors_cam.py`): one
  pass at a time, `model.forward` (both maps upsampled to the input size,
  align_corners=True), F.interpolate of cam_rv to the original size per pass, label
  mask, un-flip, sum, normalise.
- engine: `OnnxEngine.cam`: the exported stride-8 graph, flip pair batched, graph
  optimisation ALL, explicit threads, and one composed numpy resize per scale.

    python bench/inference.py --backbone resnet38_small --size 375x500 --n 4
    python bench/inference.py --backbone resnet38 --n 1 --scales 0.5,1.0
    python bench/inference.py --checkpoint runs/demo/seam_final.pth

Peak memory: the largest resident-set growth over each side's start, warm-up
included (sampled every 5 ms), and the process's ru_maxrss (which includes the
export). Run each side alone (--only) for a clean ru_maxrss.
"""
from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

if TYPE_CHECKING:
    from torch import nn


class RssPeak:
    """Peak resident set size (bytes) over a with-block, sampled from /proc/self/statm."""

    PAGE = resource.getpagesize()

    def __enter__(self) -> RssPeak:  # noqa: PYI034
        self.start = self.peak = self._rss()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()
        return self

    def _rss(self) -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * self.PAGE

    def _poll(self) -> None:
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, self._rss())

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._rss())

    @property
    def growth_mb(self) -> float:
        return (self.peak - self.start) / 2**20


def synthetic_images(n: int, h: int, w: int, seed: int | np.random.Generator) -> list[np.ndarray]:
    """Gradients + noise: VOC-sized inputs with some structure, without a data set."""
    rng = np.random.default_rng(seed)  # a Generator passes through: the caller goes on drawing from it
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([xx * 255 // max(w - 1, 1), yy * 255 // max(h - 1, 1), (xx + yy) % 256], -1)
    return [np.clip(base + rng.integers(-40, 40, (h, w, 3)), 0, 255).astype(np.uint8) for _ in range(n)]


def roofline(model_dir: Path, rgb: np.ndarray, scales, flip: bool, threads: int, engine_s: float) -> dict:
    """Achieved GMAC/s of one image's network passes (as the engine batches them: the flip
    pair of a scale together) against this machine's matmul peaks, measured just before
    and after in this process; and of the whole engine call (PCM, resizes included)."""
    from bench.hardware import conv_macs, matmul_peak, report, time_network
    from seam.common.cam import working_size
    from seam.common.image import Normalization, resize_rgb, scaled_size
    from seam.modelrepo.manifest import load_model_dir

    mf = load_model_dir(model_dir)
    norm = Normalization(tuple(mf.input.mean), tuple(mf.input.std))
    rgb = resize_rgb(rgb, working_size(rgb.shape[:2], mf.input.working_side))
    inputs = []
    for s in scales:
        x = norm(resize_rgb(rgb, scaled_size(rgb.shape[:2], s)))[None]
        inputs.append(np.concatenate([x, x[..., ::-1]]) if flip else x)
    macs = sum(conv_macs(model_dir / mf.onnx.file, x.shape) for x in inputs)
    # the PCM product per pass: relu(g^T q) is D x N x N, [n; 1] @ aff is (C + 1) x N x N
    import onnx

    outs = {o.name: o for o in onnx.load(str(model_dir / mf.onnx.file), load_external_data=False).graph.output}
    C = len(mf.class_names)
    D = outs["pcm_g"].type.tensor_type.shape.dim[1].dim_value if "pcm_g" in outs else 0  # 0: no PCM graph
    n_pix = [((x.shape[2] + 7) // 8) * ((x.shape[3] + 7) // 8) for x in inputs]
    pcm_macs = sum(x.shape[0] * n * n * (D + C + 1) for x, n in zip(inputs, n_pix, strict=False))
    before = matmul_peak(threads)
    t_net = time_network(model_dir / mf.onnx.file, inputs, threads)
    after = matmul_peak(threads)
    peak = max(before["ort_fp32_matmul"], after["ort_fp32_matmul"], before["numpy_sgemm"], after["numpy_sgemm"])
    print(f"  where the time goes ({threads} threads; fp32 matmul peak {peak:.0f} GMAC/s, best of numpy/onnxruntime "
          f"{2048}^3 before/after: " + ", ".join(f"{k} {before[k]:.0f}/{after[k]:.0f}" for k in before) + "):")
    print("    " + report("network passes (convolutions)", macs, t_net, peak))
    print("    " + report("whole engine call (convolutions + PCM products)", macs + pcm_macs, engine_s, peak)
          + f"; PCM products {pcm_macs / 1e9:.1f} GMAC")
    return {"conv_gmac": macs / 1e9, "pcm_gmac": pcm_macs / 1e9, "network_s": t_net,
            "network_gmacs": macs / t_net / 1e9, "engine_gmacs": (macs + pcm_macs) / engine_s / 1e9,
            "peak_gmacs": peak, "peak_before": before, "peak_after": after,
            "network_fraction_of_peak": macs / t_net / 1e9 / peak}


def _parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--backbone", default="resnet38_small", help="resnet38_small or resnet38 (random weights)")
    ap.add_argument("--checkpoint", type=Path, help="a SEAM checkpoint instead of random weights")
    ap.add_argument("--size", default="375x500", help="HxW of the synthetic images (VOC-like default)")
    ap.add_argument("--images", type=Path, help="a directory of real images instead of synthetic ones")
    ap.add_argument("--n", type=int, default=4, help="images timed per side")
    ap.add_argument("--scales", default="0.5,1.0,1.5,2.0")
    ap.add_argument("--no-flip", action="store_true")
    ap.add_argument("--threads", type=int, default=None, help="torch and onnxruntime threads (default: usable CPUs)")
    ap.add_argument("--only", choices=["eager", "engine"], help="run one side (clean peak memory)")
    ap.add_argument("--json", type=Path, help="also write the numbers here")
    ap.add_argument("--no-roofline", action="store_true", help="skip the GMAC/s vs matmul peak report")
    return ap.parse_args()


def _network(args: argparse.Namespace, tmp: Path) -> tuple[nn.Module, Path, str]:
    """(the eager SEAM network, its checkpoint file, the backbone's name): the given
    checkpoint, or seeded random weights saved under `tmp`."""
    from seam.training.models.registry import model_from_checkpoint

    from testkit.checkpoints import make_checkpoint

    if args.checkpoint:
        net, meta = model_from_checkpoint(args.checkpoint, "seam")
        return net, args.checkpoint, meta.get("backbone", "?")
    ckpt = tmp / "seam_random.pth"
    return make_checkpoint(ckpt, "seam", args.backbone, 21), ckpt, args.backbone


def _images(args: argparse.Namespace, rng: np.random.Generator) -> list[np.ndarray]:
    """--n timed images and one for the warm-up: from --images, else synthetic at --size."""
    from seam.common.files import list_images
    from seam.common.image import load_rgb

    if args.images:
        return [load_rgb(p) for _, p in list_images(args.images)[: args.n + 1]]
    h, w = (int(v) for v in args.size.lower().split("x"))
    return synthetic_images(args.n + 1, h, w, rng)


def _time_sides(sides: dict[str, Callable[[int], np.ndarray]], n_images: int) -> tuple[dict, dict]:
    """Per side: seconds and peak memory over images 1.. after a warm-up on image 0, and
    the warm-up's maps (what the sides are compared on)."""
    out: dict[str, dict] = {}
    maps = {}
    for name, fn in sides.items():
        with RssPeak() as mem:  # the warm-up's allocations (onnxruntime's arena) count too
            maps[name] = fn(0)  # warm-up on an image not timed
            t0 = time.perf_counter()
            for i in range(1, n_images):
                fn(i)
            dt = time.perf_counter() - t0
        out[name] = {"seconds": dt, "images_per_s": (n_images - 1) / dt, "s_per_image": dt / (n_images - 1),
                     "peak_rss_growth_mb": mem.growth_mb}
    return out, maps


def _report_sides(out: dict, maps: dict) -> None:
    """Print each side's speed and memory and, with both sides, their ratio and map difference
    (also added to `out`)."""
    for name, r in out.items():
        print(f"  {name:7s} {r['images_per_s']:.3f} img/s ({r['s_per_image']:.2f} s/img), "
              f"peak RSS growth {r['peak_rss_growth_mb']:.0f} MB")
    if len(out) == 2:
        diff = float(np.abs(maps["eager"] - maps["engine"]).max())
        ratio = out["engine"]["images_per_s"] / out["eager"]["images_per_s"]
        print(f"  engine / eager speed: {ratio:.2f}x   (max |map diff| {diff:.1e})")
        out["ratio"] = ratio
        out["max_abs_diff"] = diff


def main() -> None:
    args = _parse_args()

    import torch
    from seam.service.engine.onnx_engine import OnnxEngine
    from seam.training.export import export_model

    from seam.modelrepo.runtime import default_threads
    from testkit.authors_cam import authors_infer_seam

    threads = args.threads or default_threads()
    torch.set_num_threads(threads)
    scales = tuple(float(s) for s in args.scales.split(","))
    flip = not args.no_flip
    tmp_dir = tempfile.TemporaryDirectory(prefix="seam-bench-")  # the export (421 MB for ResNet-38)
    tmp = Path(tmp_dir.name)
    net, ckpt, backbone = _network(args, tmp)
    num_fg = net.num_classes - 1
    t0 = time.perf_counter()
    export_model(ckpt, "seam", "bench", tmp / "models", check_shapes=[(1, 3, 37, 61)], threads=threads)
    t_export = time.perf_counter() - t0
    engine = OnnxEngine.from_model_dir(tmp / "models" / "bench", providers="cpu", threads=threads)
    mf = engine.models()[0].manifest["input"]
    rng = np.random.default_rng(0)
    imgs = _images(args, rng)
    labels = [sorted(rng.choice(num_fg, size=min(2, num_fg), replace=False).tolist()) for _ in imgs]

    def run_eager(i: int) -> np.ndarray:
        vec = np.zeros(num_fg, np.float32)
        vec[labels[i]] = 1
        return authors_infer_seam(net, imgs[i], vec, scales, flip, mf["mean"], mf["std"])[labels[i]]

    def run_engine(i: int) -> np.ndarray:
        return engine.cam(imgs[i], labels[i], refined=True, scales=scales, flip=flip).cams

    sides = {"eager": run_eager, "engine": run_engine}
    out, maps = _time_sides({args.only: sides[args.only]} if args.only else sides, len(imgs))
    passes = len(scales) * (2 if flip else 1)
    print(f"backbone {backbone}, {len(imgs) - 1} images {imgs[1].shape[0]}x{imgs[1].shape[1]}, scales {scales}, "
          f"flip {flip} ({passes} passes/image), {threads} threads; export {t_export:.1f} s")
    _report_sides(out, maps)
    if not args.no_roofline and "engine" in out:
        out["roofline"] = roofline(tmp / "models" / "bench", imgs[1], scales, flip, threads,
                                   out["engine"]["s_per_image"])
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"  process ru_maxrss {maxrss:.0f} MB")
    out["ru_maxrss_mb"] = maxrss
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))
    tmp_dir.cleanup()


if __name__ == "__main__":
    main()
