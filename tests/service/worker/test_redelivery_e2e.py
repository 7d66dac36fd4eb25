"""Chunks of a dead worker come back (real `seam worker` and `seam serve` processes on loopback,
fake engine, Redis): a worker SIGKILLed mid-job, and a whole host lost, requeued before the
visibility timeout because its heartbeat stopped."""
from __future__ import annotations

import time

import httpx
import pytest

from tests.service.fakes import check_results, make_archive, redis_client, stack
from tests.support import wait_done

pytestmark = pytest.mark.slow


def test_chunks_of_a_dead_worker_host_requeued_before_the_visibility_timeout(tmp_path, redis_ok):
    """Worker main and pool process SIGKILLed together (a lost host: nobody rejects the
    message) with a 10-minute visibility timeout: the chunk comes back within seconds
    because the worker's heartbeat stopped."""
    with stack(tmp_path, "celery", SEAM_FAKE_DELAY_MS="300", SEAM_VISIBILITY_TIMEOUT_S="600",
               SEAM_TASK_SOFT_TIME_LIMIT_S="60", SEAM_TASK_TIME_LIMIT_S="120", SEAM_WORKER_HEARTBEAT_S="1") as s:
        w1 = s.start_worker("w1")
        s.start_api()
        archive, imgs = make_archive(16)
        with httpx.Client(base_url=s.url, timeout=30) as c:
            job_id = c.post("/jobs", files={"archive": ("a.zip", archive, "application/zip")},
                            data={"outputs": "png"}).json()["id"]
            wait_done(c, job_id, 60, until=lambda b: b["done"] >= 1)
            s.kill(w1)
            t_kill = time.time()
            s.start_worker("w2")
            body = wait_done(c, job_id, 90)
            assert (body["state"], body["done"], body["failed"]) == ("succeeded", 16, 0), body
            assert time.time() - t_kill < 90 < 600  # far sooner than the visibility timeout
            check_results(c, job_id, imgs)
        assert "re-queued chunk task" in s.logs("api"), s.logs("api")  # by the heartbeat reaper


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
