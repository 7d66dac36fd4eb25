"""Issue 11 end to end with a real `seam serve` process (embedded mode, fake engine):
SIGKILL it mid-job, start it again on the same data directory, and the job completes
with every output exactly once; and an unauthenticated 20 MiB upload is answered
before its body is sent."""
from __future__ import annotations

import socket
import time

import httpx
import pytest

from tests.service.helpers import check_results, make_archive, stack
from tests.support import wait_done

pytestmark = pytest.mark.slow

KEY = "restart-e2e-key-" + "k" * 8


def test_sigkill_of_seam_serve_mid_job_then_restart(tmp_path):
    with stack(tmp_path, "embedded", SEAM_FAKE_DELAY_MS="120", SEAM_API_KEYS=KEY) as s:
        api = s.start_api()
        archive, imgs = make_archive(24)
        with httpx.Client(base_url=s.url, timeout=30, headers={"X-API-Key": KEY}) as c:
            r = c.post("/jobs", files={"archive": ("a.zip", archive, "application/zip")}, data={"outputs": "png"})
            assert r.status_code == 202, r.text
            job_id = r.json()["id"]
            wait_done(c, job_id, 60, until=lambda b: b["done"] >= 6)
            s.kill(api)  # SIGKILL: no shutdown hook runs
        out = tmp_path / "data" / "jobs" / job_id / "outputs" / "png"
        before = {p.name: p.stat().st_ino for p in out.iterdir() if p.suffix == ".png"}
        assert 6 <= len(before) < 24, before

        s.start_api()  # same data directory: the job is resumed from its SQLite state
        with httpx.Client(base_url=s.url, timeout=30, headers={"X-API-Key": KEY}) as c:
            body = wait_done(c, job_id, 90)
            assert (body["state"], body["done"], body["failed"], body["total"]) == ("succeeded", 24, 0, 24), body
            check_results(c, job_id, imgs)  # every image exactly once, the right label map
        after = {p.name: p.stat().st_ino for p in out.iterdir()}
        assert sorted(after) == sorted(f"{k}.png" for k in imgs)
        assert all(after[n] == ino for n, ino in before.items())  # outputs done before the kill: not redone
        assert not (tmp_path / "data" / "jobs" / job_id / "inputs").exists()  # inputs freed at the end


def test_unauthenticated_upload_answered_before_the_body(tmp_path):
    with stack(tmp_path, "embedded", SEAM_API_KEYS=KEY) as s:
        s.start_api()
        size = 20 * 1024 * 1024
        with socket.create_connection(("127.0.0.1", s.port), timeout=10) as sock:
            sock.sendall((f"POST /segment HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\n"
                          f"Content-Length: {size}\r\n\r\n").encode())
            t0 = time.perf_counter()
            head = ""  # no body byte has been sent; the answer may arrive in several segments
            while "unauthorized" not in head and time.perf_counter() - t0 < 5:
                part = sock.recv(4096).decode(errors="replace")
                if not part:
                    break
                head += part
            assert head.startswith("HTTP/1.1 401"), head
            assert "unauthorized" in head and time.perf_counter() - t0 < 5
            sent = 0
            try:  # the server closed the connection: the body cannot be pushed
                for _ in range(size // 65536):
                    sock.sendall(b"x" * 65536)
                    sent += 65536
            except OSError:
                pass
            assert sent < size


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
