"""/segment latency through the API versus a direct engine call on the same image.

    python bench/serve_overhead.py                       # fake engine (no model needed)
    python bench/serve_overhead.py --models-dir models   # the real onnxruntime engine
    python bench/serve_overhead.py --url http://127.0.0.1:8000 --image photo.jpg   # a running server

The in-process mode drives the ASGI app with the same engine object, so the
difference is the service's own cost: multipart parsing, sniffing, decoding, the
concurrency slot, thread hand-off, PNG/JSON encoding and the HTTP plumbing.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def synthetic_png(h: int, w: int) -> bytes:
    import io

    from PIL import Image

    yy, xx = np.mgrid[0:h, 0:w]
    a = np.stack([(xx * 255 // max(w - 1, 1)), (yy * 255 // max(h - 1, 1)), ((xx + yy) % 256)], -1)
    buf = io.BytesIO()
    Image.fromarray(a.astype(np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def timed(fn, n: int, warmup: int) -> list[float]:
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def summary(name: str, xs: list[float]) -> str:
    xs = sorted(xs)
    p90 = xs[min(len(xs) - 1, int(0.9 * len(xs)))]
    return f"{name:<22} median {statistics.median(xs) * 1e3:9.2f} ms   p90 {p90 * 1e3:9.2f} ms   (n={len(xs)})"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models-dir", type=Path, help="model repository (default: the fake engine)")
    ap.add_argument("--image", type=Path, help="image file (default: synthetic PNG of --size)")
    ap.add_argument("--size", default="375x500", help="HxW of the synthetic image")
    ap.add_argument("--method", default=None, help="cam, pcm, rw or deeplab (default: the best available)")
    ap.add_argument("--format", default="png", choices=["png", "json"])
    ap.add_argument("-n", type=int, default=20, help="timed repetitions")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=None, help="onnxruntime threads")
    ap.add_argument("--url", help="benchmark a running server instead of an in-process app")
    ap.add_argument("--api-key", default=None)
    args = ap.parse_args()

    from fastapi.testclient import TestClient
    from seam.service.core.config import Settings
    from seam.service.core.engine_holder import build_engine
    from seam.service.main import create_app

    from seam.common.image import load_rgb

    h, w = (int(v) for v in args.size.lower().split("x"))
    data = args.image.read_bytes() if args.image else synthetic_png(h, w)
    settings = Settings(engine="onnx" if args.models_dir else "fake", models_dir=args.models_dir or Path("models"),
                        threads=args.threads, data_dir=Path(tempfile.mkdtemp(prefix="seam-bench-")),
                        max_inflight=1, warmup=False)
    engine = build_engine(settings)
    rgb = load_rgb(data)
    method = args.method or engine.methods()[0]
    print(f"engine: {type(engine).__name__} ({method}), image {rgb.shape[1]}x{rgb.shape[0]}, "
          f"{len(data) / 1024:.0f} KiB", flush=True)

    direct = timed(lambda: engine.segment(rgb, method=method), args.n, args.warmup)
    fields = {"format": args.format, "method": method}
    headers = {"X-API-Key": args.api_key} if args.api_key else {}

    def post(client):
        r = client.post("/segment", files={"image": ("bench.png", data)}, data=fields, headers=headers)
        if r.status_code != 200:
            raise SystemExit(f"/segment answered {r.status_code}: {r.text[:300]}")

    if args.url:
        import httpx

        with httpx.Client(base_url=args.url, timeout=600) as c:
            via = timed(lambda: post(c), args.n, args.warmup)
        label = "/segment (HTTP)"
    else:
        with TestClient(create_app(settings, engine=engine)) as c:
            via = timed(lambda: post(c), args.n, args.warmup)
        label = "/segment (in-process)"

    print(summary("engine.segment", direct))
    print(summary(label, via))
    md, mv = statistics.median(direct), statistics.median(via)
    print(f"overhead: +{(mv - md) * 1e3:.2f} ms per request, ratio {mv / md:.3f}x")


if __name__ == "__main__":
    main()
