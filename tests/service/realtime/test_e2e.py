"""Broker mode end to end on loopback: /segment and /cam computed by a `seam worker`
process (the API process cannot compute: its model repository does not exist), answers
equal to embedded mode's; killing the only worker turns /readyz not-ready within its
cache period and the synchronous endpoints answer 503 at once."""
from __future__ import annotations

import asyncio
import os
import signal
import socket
import time

import httpx
import pytest

from testkit.processes import wait_until
from tests.service.fakes import Stack, png_bytes, redis_client

pytestmark = pytest.mark.slow

REQUESTS = [("/segment", {}), ("/segment", {"format": "json", "labels": "red,green", "threshold": "0.3"}),
            ("/cam", {}), ("/cam/refined", {"format": "json"}), ("/cam", {"format": "png"})]


class ApiEnvStack(Stack):
    def start_api_with(self, **env: str):
        """start_api, with environment variables for the API process only."""
        saved = dict(self.env)
        self.env.update(env)
        try:
            return self.start_api()
        finally:
            self.env = saved


def _answers(url: str, data: bytes) -> list[tuple[int, bytes, str | None]]:
    out = []
    with httpx.Client(base_url=url, timeout=30) as c:
        for path, fields in REQUESTS:
            r = c.post(path, files={"image": ("a.png", data)}, data=fields)
            out.append((r.status_code, r.content, r.headers.get("x-seam-classes")))
    return out


def test_segment_on_worker_equals_embedded_and_worker_death(tmp_path, redis_ok):  # noqa: F811
    data = png_bytes(96, 128, seed=7)
    emb = ApiEnvStack(tmp_path / "emb", "embedded")
    (tmp_path / "emb").mkdir()
    try:
        emb.start_api()
        embedded = _answers(emb.url, data)
    finally:
        emb.stop()
    assert [s for s, _, _ in embedded] == [200] * len(REQUESTS)

    (tmp_path / "brk").mkdir()
    s = ApiEnvStack(tmp_path / "brk", "celery", SEAM_WORKER_HEARTBEAT_S="1", SEAM_REQUEST_TIMEOUT_S="20")
    try:
        worker = s.start_worker("w1")
        # The API has no model it could run: an onnx engine over a directory that does not exist.
        s.start_api_with(SEAM_ENGINE="onnx", SEAM_MODELS_DIR=str(tmp_path / "no-models"))
        with httpx.Client(base_url=s.url, timeout=30) as c:
            ready = c.get("/readyz").json()
            assert ready["ready"] and ready["checks"]["models"]["detail"] == "fake", ready
            assert "w1@" in ready["checks"]["workers"]["detail"]
            r = c.post("/segment", files={"image": ("a.png", data)})
            assert r.status_code == 200 and r.headers["x-seam-worker"] == f"w1@{socket.gethostname()}"
        assert _answers(s.url, data) == embedded  # byte for byte, every format

        async def burst() -> list[int]:
            async with httpx.AsyncClient(base_url=s.url, timeout=30) as ac:
                rs = await asyncio.gather(*[ac.post("/segment", files={"image": ("a.png", data)})
                                            for _ in range(12)])
            assert all(x.content == embedded[0][1] for x in rs if x.status_code == 200)
            return [x.status_code for x in rs]
        assert asyncio.run(burst()) == [200] * 12

        s.kill(worker)  # SIGKILL: no goodbye, only the heartbeat stops
        t0 = time.monotonic()
        with httpx.Client(base_url=s.url, timeout=30) as c:
            wait_until(lambda: c.get("/readyz").status_code != 200, 8, 0.1,
                       what="still ready 8 s after the only worker died")
            took = time.monotonic() - t0
            body = c.get("/readyz").json()
            assert "no live worker" in body["checks"]["workers"]["detail"]
            t1 = time.monotonic()
            r = c.post("/segment", files={"image": ("a.png", data)})
            assert r.status_code == 503 and r.json()["error"]["code"] == "no_worker" and r.headers["retry-after"]
            assert time.monotonic() - t1 < 2
        print(f"\n/readyz not ready {took:.1f} s after SIGKILL of the only worker (heartbeat 1 s)")
    finally:
        s.stop()


def test_slow_worker_computation_200_and_deadline_504(tmp_path, redis_ok):  # noqa: F811
    """A worker computing longer than redis-py's default 5 s read timeout is still answered
    200; past SEAM_REQUEST_TIMEOUT_S the answer is 504, and the worker drops the abandoned
    request instead of finishing it (no reply is ever pushed for it)."""
    data = png_bytes(32, 40, seed=3)
    delay_s = 7.0  # the fake engine's compute time per request: longer than 5 s
    s = ApiEnvStack(tmp_path, "celery", SEAM_WORKER_HEARTBEAT_S="1", SEAM_FAKE_DELAY_MS=str(int(delay_s * 1000)),
                    SEAM_WARMUP="false",
                    # chunk limits below the computation: the realtime task carries its own (was a 500)
                    SEAM_TASK_SOFT_TIME_LIMIT_S="5", SEAM_TASK_TIME_LIMIT_S="6", SEAM_VISIBILITY_TIMEOUT_S="30")
    r_keys = redis_client()
    try:
        s.start_worker("slow")
        api = s.start_api_with(SEAM_REQUEST_TIMEOUT_S="30")
        with httpx.Client(base_url=s.url, timeout=60) as c:
            wait_until(lambda: c.get("/readyz").status_code == 200, 30, 0.2, what="the worker never became ready")
            t0 = time.monotonic()
            r = c.post("/segment", files={"image": ("a.png", data)})
            took = time.monotonic() - t0
            assert r.status_code == 200, r.text  # was 503 "Timeout reading from <host>" after 5 s
            assert took >= delay_s
        os.killpg(api.pid, signal.SIGTERM)
        api.wait(10)
        s.start_api_with(SEAM_REQUEST_TIMEOUT_S="2")
        with httpx.Client(base_url=s.url, timeout=60) as c:
            wait_until(lambda: c.get("/readyz").status_code == 200, 30, 0.2, what="the worker never became ready")
            t0 = time.monotonic()
            r = c.post("/segment", files={"image": ("a.png", data)})
            timed_out = time.monotonic() - t0
            assert r.status_code == 504 and r.json()["error"]["code"] == "timeout", r.text
            assert 2 <= timed_out < 4
        time.sleep(delay_s + 1 - timed_out)  # past the moment the worker would have finished it
        assert not list(r_keys.scan_iter(f"{s.prefix}:rt:*")), "the worker finished a request nobody waited for"
        print(f"\nbroker mode: a {delay_s:g} s worker computation answered 200 in {took:.1f} s; "
              f"504 after {timed_out:.1f} s (deadline 2 s), the abandoned computation dropped")
    finally:
        s.stop()
