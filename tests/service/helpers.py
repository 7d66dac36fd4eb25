"""Helpers shared by the service tests: the error-shape check, Redis reachability, and the
end-to-end stack of real processes (`seam serve`, `seam worker`) on loopback."""
from __future__ import annotations

import io
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

from tests.service.fakes import FakeEngine, encode, rgb_image, zip_bytes


def assert_error(r, status: int, code: str | None = None, contains: str | None = None) -> dict:
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error"} and {"code", "message"} <= set(body["error"]), body
    if code:
        assert body["error"]["code"] == code, body
    if contains:
        assert contains.lower() in body["error"]["message"].lower(), body
    return body["error"]


REDIS_URL = "redis://127.0.0.1:6379/14"


def redis_reachable() -> bool:
    try:
        import redis

        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=0.5).ping()
        return True
    except Exception:
        return False


REPO = Path(__file__).resolve().parents[2]
REDIS_DB = 13


def redis_client():
    import redis

    return redis.Redis.from_url(f"redis://127.0.0.1:6379/{REDIS_DB}", socket_connect_timeout=1)


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
        p = self._spawn(f"from seam.cli.serve import serve; serve(host='127.0.0.1', port={self.port}, "
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
        return self._spawn(f"from seam.cli.worker import worker; worker(hostname='{name}@%h', "
                           "loglevel='warning')", name)

    def logs(self, name: str) -> str:
        path = self.tmp / f"{name}.log"
        return path.read_text(errors="replace")[-4000:] if path.exists() else ""

    def kill(self, p: subprocess.Popen) -> None:
        """SIGKILL the whole process group: the worker's main process and its pool child."""
        with suppress(ProcessLookupError):
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
            r = redis_client()
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
