"""End to end with real processes on loopback: Redis (127.0.0.1:6379, a dedicated db
and a unique key prefix), `seam worker` (Celery, prefork -c 1) and `seam serve`
(uvicorn), all on the fake engine (SEAM_ENGINE=fake) so no trained model is needed."""
from __future__ import annotations

import contextlib
import asyncio
import io
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import numpy as np
import psutil
import pytest
from PIL import Image

from tests.service.fakes import FakeEngine, encode, rgb_image, zip_bytes

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
REDIS_DB = 13


def _redis():
    import redis

    return redis.Redis.from_url(f"redis://127.0.0.1:6379/{REDIS_DB}", socket_connect_timeout=1)


@pytest.fixture(scope="module")
def redis_ok():
    try:
        _redis().ping()
    except Exception:
        pytest.skip("no Redis on 127.0.0.1:6379 (`redis-server --daemonize yes`)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Stack:
    def __init__(self, tmp: Path, mode: str, **env: str) -> None:
        self.tmp = tmp
        self.mode = mode
        self.prefix = f"seame2e-{uuid.uuid4().hex[:10]}"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.procs: list[subprocess.Popen] = []
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("SEAM_")}
        self.env.update({
            "PYTHONPATH": str(REPO), "SEAM_ENGINE": "fake", "SEAM_DATA_DIR": str(tmp / "data"),
            "SEAM_MODELS_DIR": str(tmp / "models"), "SEAM_KEY_PREFIX": self.prefix, "SEAM_CHUNK_SIZE": "4",
            "SEAM_FAKE_DELAY_MS": "20", "SEAM_TASK_SOFT_TIME_LIMIT_S": "5", "SEAM_TASK_TIME_LIMIT_S": "6",
            "SEAM_VISIBILITY_TIMEOUT_S": "8",
        })
        if mode == "celery":
            self.env["SEAM_BROKER_URL"] = f"redis://127.0.0.1:6379/{REDIS_DB}"
        self.env.update(env)

    def _spawn(self, code: str, name: str, **env: str) -> subprocess.Popen:
        log = open(self.tmp / f"{name}.log", "ab")  # noqa: SIM115 - the child process holds it
        p = subprocess.Popen([sys.executable, "-c", code], cwd=REPO, env={**self.env, **env}, stdout=log,
                             stderr=subprocess.STDOUT, start_new_session=True)
        self.procs.append(p)
        return p

    def start_api(self) -> subprocess.Popen:
        p = self._spawn(f"from seam.commands.serve import serve; serve(host='127.0.0.1', port={self.port}, "
                        "log_level='warning')", "api")
        deadline = time.time() + 60
        while time.time() < deadline:
            assert p.poll() is None, self.logs("api")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200:
                    return p
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise AssertionError("API not ready:\n" + self.logs("api"))

    def start_worker(self, name: str) -> subprocess.Popen:
        return self._spawn(f"from seam.commands.worker import worker; worker(hostname='{name}@%h', "
                           "loglevel='warning')", name)

    def logs(self, name: str) -> str:
        path = self.tmp / f"{name}.log"
        return path.read_text(errors="replace")[-4000:] if path.exists() else ""

    def kill(self, p: subprocess.Popen) -> None:
        """SIGKILL the whole process group: the worker's main process and its pool child."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(p.pid, signal.SIGKILL)
        p.wait(10)

    def stop(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGTERM)
                    p.wait(10)
                except (ProcessLookupError, subprocess.TimeoutExpired):
                    self.kill(p)
        if self.mode == "celery":
            r = _redis()
            keys = list(r.scan_iter(f"{self.prefix}*")) + list(r.scan_iter(f"_kombu.binding.{self.prefix}*"))
            if keys:
                r.delete(*keys)


@contextmanager
def stack(tmp: Path, mode: str, **env: str) -> Iterator[Stack]:
    s = Stack(tmp, mode, **env)
    try:
        yield s
    finally:
        s.stop()


def make_archive(n: int) -> tuple[bytes, dict[str, np.ndarray]]:
    imgs = {f"im{i:02d}": rgb_image(20 + i % 4, 28 + i % 3, seed=i) for i in range(n)}
    return zip_bytes({f"{k}.png": encode(a) for k, a in imgs.items()}), imgs


def wait_done(client: httpx.Client, job_id: str, timeout: float, until=None) -> dict:
    deadline = time.time() + timeout
    body = {}
    while time.time() < deadline:
        body = client.get(f"/jobs/{job_id}").json()
        if until is not None and until(body):
            return body
        if until is None and body["state"] not in ("queued", "running"):
            return body
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} not done in {timeout} s: {body}")


def check_results(client: httpx.Client, job_id: str, imgs: dict[str, np.ndarray]) -> None:
    r = client.get(f"/jobs/{job_id}/results")
    assert r.status_code == 200
    zf = zipfile.ZipFile(io.BytesIO(r.content))
    pngs = [n for n in zf.namelist() if n.startswith("png/")]
    assert len(pngs) == len(set(pngs)) == len(imgs)  # every image exactly once
    engine = FakeEngine()
    for iid, a in imgs.items():
        got = np.asarray(Image.open(io.BytesIO(zf.read(f"png/{iid}.png"))))
        assert np.array_equal(got, engine.segment(a).label), iid


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
            deliveries = _redis().hgetall(f"{s.prefix}:job:{job['id']}:deliveries")
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
