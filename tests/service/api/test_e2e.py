"""The API's admission under load with a real `seam serve` process (fake engine): 50 concurrent
/segment requests, at most SEAM_MAX_INFLIGHT computed at once, memory bounded."""
from __future__ import annotations

import asyncio
import threading
import time

import httpx
import numpy as np
import psutil
import pytest

from tests.service.fakes import encode, stack

pytestmark = pytest.mark.slow


def test_50_concurrent_segments_bounded(tmp_path, redis_ok):
    with stack(tmp_path, "embedded", SEAM_MAX_INFLIGHT="2", SEAM_MAX_WAITING="8", SEAM_WAIT_TIMEOUT_S="20",
               SEAM_FAKE_DELAY_MS="50") as s:
        api = s.start_api()
        proc = psutil.Process(api.pid)
        peak = {"rss": proc.memory_info().rss}
        stop = threading.Event()

        def sample():
            while not stop.is_set():
                try:
                    peak["rss"] = max(peak["rss"], proc.memory_info().rss)
                except psutil.Error:
                    return
                time.sleep(0.02)
        t = threading.Thread(target=sample)
        t.start()
        yy, xx = np.mgrid[0:480, 0:640]
        photo = encode(np.stack([xx % 256, yy % 256, (xx + yy) % 256], -1).astype(np.uint8))
        base_rss = peak["rss"]

        async def run() -> list[httpx.Response]:
            async with httpx.AsyncClient(base_url=s.url, timeout=60) as c:
                return await asyncio.gather(*[c.post("/segment", files={"image": ("p.png", photo)})
                                              for _ in range(50)])
        responses = asyncio.run(run())
        stop.set()
        t.join()
        codes = [r.status_code for r in responses]
        print(f"\n50 concurrent /segment: {sorted(set((c, codes.count(c)) for c in codes))}; "
              f"API RSS {base_rss / 2**20:.0f} MiB idle, peak {peak['rss'] / 2**20:.0f} MiB")
        assert set(codes) <= {200, 429, 503}, codes
        assert codes.count(200) >= 2
        for r in responses:
            if r.status_code != 200:
                assert r.headers.get("retry-after") and r.json()["error"]["code"]
        assert peak["rss"] - base_rss < 400 * 2**20
        assert httpx.get(f"{s.url}/healthz").status_code == 200
