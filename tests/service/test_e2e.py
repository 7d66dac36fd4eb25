"""End to end with real processes on loopback: Redis (127.0.0.1:6379, a dedicated db
and a unique key prefix), `seam worker` (Celery, prefork -c 1) and `seam serve`
(uvicorn), all on the fake engine (SEAM_ENGINE=fake) so no trained model is needed."""
from __future__ import annotations

import asyncio
import threading
import time

import httpx
import numpy as np
import psutil
import pytest

from tests.service.fakes import encode
from tests.service.helpers import check_results, make_archive, redis_client, stack
from tests.support import wait_done

pytestmark = pytest.mark.slow

@pytest.mark.parametrize("mode", ["embedded", "celery"])
def test_job_of_40_images(tmp_path, redis_ok, mode):
    with stack(tmp_path, mode) as s:
        if mode == "celery":
            s.start_worker("w1")
        s.start_api()
        with httpx.Client(base_url=s.url, timeout=30) as c:
            ready = c.get("/readyz").json()
            assert ready["mode"] == mode and ready["ready"]
            archive, imgs = make_archive(40)
            r = c.post("/jobs", files={"archive": ("a.zip", archive)})
            assert r.status_code == 202, r.text
            done = wait_done(c, r.json()["id"], 60)
            assert (done["state"], done["done"], done["failed"], done["total"]) == ("succeeded", 40, 0, 40), done
            check_results(c, done["id"], imgs)
            metrics = c.get("/metrics").text
            assert 'seam_job_images_total{result="done"} 40.0' in metrics


def test_worker_sigkill_mid_job(tmp_path, redis_ok):
    with stack(tmp_path, "celery", SEAM_FAKE_DELAY_MS="150") as s:
        w1 = s.start_worker("w1")
        s.start_api()
        with httpx.Client(base_url=s.url, timeout=30) as c:
            archive, imgs = make_archive(40)
            job = c.post("/jobs", files={"archive": ("a.zip", archive)}).json()
            mid = wait_done(c, job["id"], 60, until=lambda b: b["done"] >= 6)
            assert mid["state"] == "running"
            s.kill(w1)  # SIGKILL main process + pool child, mid-chunk
            after_kill = c.get(f"/jobs/{job['id']}").json()
            assert after_kill["done"] < 40, "the job finished before the kill; make it slower"
            s.start_worker("w2")
            done = wait_done(c, job["id"], 90)
            assert (done["state"], done["done"], done["failed"]) == ("succeeded", 40, 0), done
            check_results(c, job["id"], imgs)
            out = tmp_path / "data" / "jobs" / job["id"] / "outputs" / "png"
            assert sorted(p.name for p in out.iterdir()) == sorted(f"{k}.png" for k in imgs)
            deliveries = redis_client().hgetall(f"{s.prefix}:job:{job['id']}:deliveries")
            counts = sorted(int(v) for v in deliveries.values())
            print(f"\nchunk deliveries after the kill: {counts}")
            assert len(counts) == 10 and max(counts) == 2  # the killed chunk ran again, once


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
