"""Hot reload delay: from a promotion in the model repository to the first request answered by
the new version, in one process's model registry (what the API and each worker run).

    python bench/model_reload.py                    # the default poll (SEAM_MODELS_POLL_S=2)
    python bench/model_reload.py --poll 0.2 --n 10

Two versions of the demo model are published into a temporary repository; the bench promotes
them in turn and polls `acquire()` (what a request does) every 5 ms until it names the new version.
The delay is the wait for the next poll plus verifying (sha256) and loading the version the first
time; later swaps back to a version still loaded reuse its engine.
"""
from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--poll", type=float, default=2.0, help="SEAM_MODELS_POLL_S")
    ap.add_argument("--n", type=int, default=6, help="promotions")
    args = ap.parse_args()

    from seam.service.core.config import Settings
    from seam.service.core.registry import make_registry

    from seam.modelrepo import versions
    from testkit.versions import publish_variant

    with tempfile.TemporaryDirectory() as tmp:
        repo = Path(tmp) / "models"
        for bg in (0.05, 0.6):
            publish_variant(repo, "shapes", bg, Path(tmp))
        reg = make_registry(Settings(models_dir=repo, engine="onnx", threads=1, warmup=True))
        reg.start_watching(args.poll)
        while reg.default_ref() != "shapes:1":
            time.sleep(0.01)
        first, again = [], []
        rng = random.Random(0)
        for i in range(args.n):
            target = 2 if i % 2 == 0 else 1
            time.sleep(rng.uniform(0, args.poll))  # promotions come at any moment of the poll cycle
            t0 = time.perf_counter()
            versions.promote(repo, "shapes", target)
            while reg.acquire().version != target:
                time.sleep(0.005)
            (first if i == 0 else again).append(time.perf_counter() - t0)
        reg.stop_watching()
    print(f"poll {args.poll:g} s: first promotion (verify + load + warm) {first[0]:.2f} s; later swaps "
          f"mean {statistics.mean(again):.2f} s, max {max(again):.2f} s ({len(again)} promotions at random moments)")


if __name__ == "__main__":
    main()
