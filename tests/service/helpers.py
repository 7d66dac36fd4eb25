"""Helpers shared by the service tests: the error-shape check, Redis, waiting for a job, the
end-to-end stack of real processes (`seam serve`, `seam worker`) on loopback. The bundled demo
model under a memory cap and its photos are in testkit/demo.py (bench/any_photo.py uses them too)."""
from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import uuid
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import numpy as np
from PIL import Image

from testkit import REPO
from testkit.processes import free_port, log_tail, seam_serve_argv, service_env, spawn, wait_ready
from tests.service.fakes import FakeEngine, encode, rgb_image, zip_bytes
from tests.support import redis_url


def assert_error(r, status: int, code: str | None = None, contains: str | None = None) -> dict:
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error"} and {"code", "message"} <= set(body["error"]), body
    if code:
        assert body["error"]["code"] == code, body
    if contains:
        assert contains.lower() in body["error"]["message"].lower(), body
    return body["error"]


# --- Redis on loopback ----------------------------------------------------------------------
REDIS_DB = 13  # the end-to-end stacks
REDIS_URL = redis_url(14)  # in-process tests (stores, the realtime path)


def redis_reachable() -> bool:
    try:
        import redis

        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=0.5).ping()
        return True
    except Exception:
        return False


def redis_client():
    import redis

    return redis.Redis.from_url(redis_url(REDIS_DB), socket_connect_timeout=1)


def drop_keys(r, prefix: str) -> None:
    """Delete a test's keys: everything under `prefix` and kombu's queue bindings for it."""
    keys = list(r.scan_iter(f"{prefix}*")) + list(r.scan_iter(f"_kombu.binding.{prefix}*"))
    if keys:
        r.delete(*keys)


# --- jobs ------------------------------------------------------------------------------------
def make_archive(n: int) -> tuple[bytes, dict[str, np.ndarray]]:
    imgs = {f"im{i:02d}": rgb_image(20 + i % 4, 28 + i % 3, seed=i) for i in range(n)}
    return zip_bytes({f"{k}.png": encode(a) for k, a in imgs.items()}), imgs


def check_results(client, job_id: str, imgs: dict[str, np.ndarray]) -> None:
    r = client.get(f"/jobs/{job_id}/results")
    assert r.status_code == 200
    zf = zipfile.ZipFile(io.BytesIO(r.content))
    pngs = [n for n in zf.namelist() if n.startswith("png/")]
    assert len(pngs) == len(set(pngs)) == len(imgs)  # every image exactly once
    engine = FakeEngine()
    for iid, a in imgs.items():
        got = np.asarray(Image.open(io.BytesIO(zf.read(f"png/{iid}.png"))))
        assert np.array_equal(got, engine.segment(a).label), iid


# --- the end-to-end stack ---------------------------------------------------------------------
class Stack:
    """`seam serve` and `seam worker` processes (fake engine) sharing a data directory and,
    in celery mode, a Redis key prefix. The API keeps its port across restarts."""

    def __init__(self, tmp: Path, mode: str, **env: str) -> None:
        self.tmp = tmp
        self.mode = mode
        self.prefix = f"seame2e-{uuid.uuid4().hex[:10]}"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.procs: list[subprocess.Popen] = []
        self.env = service_env(**{
            "PYTHONPATH": str(REPO), "SEAM_ENGINE": "fake", "SEAM_DATA_DIR": str(tmp / "data"),
            "SEAM_MODELS_DIR": str(tmp / "models"), "SEAM_KEY_PREFIX": self.prefix, "SEAM_CHUNK_SIZE": "4",
            "SEAM_FAKE_DELAY_MS": "20", "SEAM_TASK_SOFT_TIME_LIMIT_S": "5", "SEAM_TASK_TIME_LIMIT_S": "6",
            "SEAM_VISIBILITY_TIMEOUT_S": "8",
        })
        if mode == "celery":
            self.env["SEAM_BROKER_URL"] = redis_url(REDIS_DB)
        self.env.update(env)

    def _spawn(self, argv: list[str], name: str) -> subprocess.Popen:
        p = spawn(argv, self.env, self.tmp / f"{name}.log", start_new_session=True)
        self.procs.append(p)
        return p

    def start_api(self) -> subprocess.Popen:
        p = self._spawn([*seam_serve_argv(self.port), "--log-level", "warning"], "api")
        wait_ready(self.url, p, self.tmp / "api.log", timeout=60, interval=0.2)
        return p

    def start_worker(self, name: str) -> subprocess.Popen:
        return self._spawn([sys.executable, "-m", "seam.cli", "worker", "--hostname", f"{name}@%h",
                            "--loglevel", "warning"], name)

    def logs(self, name: str) -> str:
        return log_tail(self.tmp / f"{name}.log")

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
            drop_keys(redis_client(), self.prefix)


@contextmanager
def stack(tmp: Path, mode: str, **env: str) -> Iterator[Stack]:
    s = Stack(tmp, mode, **env)
    try:
        yield s
    finally:
        s.stop()
