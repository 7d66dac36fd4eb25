"""The end-to-end stack of real processes (`seam serve`, `seam worker`) on loopback. The bundled
demo model under a memory cap and its photos are in testkit/demo.py (bench/any_photo.py uses them too)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from testkit import REPO
from testkit.processes import free_port, log_tail, seam_serve_argv, service_env, spawn, wait_ready
from tests.service.fakes.redis_db import REDIS_DB, drop_keys, redis_client
from tests.support import redis_url


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
