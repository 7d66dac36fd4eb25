"""`POST /segment` of phone-sized photos against a VOC-sized one: time and peak RSS growth of
the server (`seam serve`, embedded mode, the bundled demo model), same server, same run.

    python bench/any_photo.py [--models-dir models] [--n 3] [--sizes 500x375,1600x1200,4000x3000]

Prints per size: median request time, the server's peak RSS growth over its idle RSS
(sampled every 10 ms), and both as ratios to the first (baseline) size.
"""
from __future__ import annotations

import argparse
import io
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import psutil
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from testkit.demo import photo, serve_demo  # noqa: E402  (shared with the tests)
from testkit.processes import stop_process  # noqa: E402


class PeakRss:
    def __init__(self, pid: int) -> None:
        self.proc = psutil.Process(pid)
        self.peak = 0
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, sum(p.memory_info().rss for p in [self.proc, *self.proc.children(True)]))
            time.sleep(0.01)

    def __enter__(self) -> PeakRss:
        self._t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._t.join()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models-dir", default=str(REPO / "models"))
    ap.add_argument("--sizes", default="500x375,1600x1200,4000x3000")
    ap.add_argument("--n", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    tmp_dir = tempfile.TemporaryDirectory(prefix="seam-bench-any-photo-")  # removed at exit
    tmp = Path(tmp_dir.name)
    url, proc = serve_demo(tmp / "data", tmp / "serve.log", cap=False, SEAM_MODELS_DIR=args.models_dir,
                           SEAM_THREADS=str(args.threads))
    try:
        rows = []
        for size in args.sizes.split(","):
            w, h = (int(v) for v in size.split("x"))
            data = photo(h, w)
            times, growth = [], []
            for _ in range(args.n):
                idle = psutil.Process(proc.pid).memory_info().rss
                with PeakRss(proc.pid) as rss:
                    t0 = time.perf_counter()
                    r = httpx.post(f"{url}/segment", files={"image": ("p.jpg", data, "image/jpeg")}, timeout=600)
                    times.append(time.perf_counter() - t0)
                assert r.status_code == 200, r.text
                assert Image.open(io.BytesIO(r.content)).size == (w, h)
                growth.append((rss.peak - idle) / 2**20)
            rows.append((size, len(data), statistics.median(times), max(growth)))
        t_base, g_base = rows[0][2], max(rows[0][3], 1.0)
        print(f"{'image':>10} {'JPEG KiB':>9} {'median s':>9} {'x base':>7} {'peak RSS growth MiB':>20} {'x base':>7}")
        for size, nbytes, t, g in rows:
            print(f"{size:>10} {nbytes / 1024:9.0f} {t:9.3f} {t / t_base:7.2f} {g:20.1f} {g / g_base:7.2f}")
    finally:
        stop_process(proc)


if __name__ == "__main__":
    main()
