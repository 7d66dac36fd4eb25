"""What the test directories share: polling a condition instead of sleeping a fixed time, and
the one way tests run the service as a real server (a process on a free loopback port, ready
when its /readyz answers 200; or uvicorn in a thread of the test process).

Not a test module: test modules and conftest.py files import from here, never from each other.
"""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import httpx
import numpy as np

REPO = Path(__file__).resolve().parents[1]
T = TypeVar("T")

# Folders of the repository that install under the seam namespace (setup.py), by their package.
NAMESPACED = {"service": "seam.service", "training": "seam.training"}


def module_name(path: Path) -> str:
    """The importable name of a source file of the repository: `service/main.py` ->
    `seam.service.main`, `seam/common/cam.py` -> `seam.common.cam`, `tests/x.py` -> `tests.x`."""
    parts = list(path.resolve().relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    if parts and parts[0] in NAMESPACED:
        parts[0] = NAMESPACED[parts[0]]
    return ".".join(parts)

# The one Redis setting of the test suite: a server URL without a database number; tests pick
# their databases on it (redis_url). Default: a Redis on loopback, as scripts/test.sh starts.
REDIS_SERVER = os.environ.get("SEAM_TEST_REDIS_URL", "redis://127.0.0.1:6379").rstrip("/")


def redis_url(db: int) -> str:
    """The test Redis server's database `db` as a redis:// URL."""
    return f"{REDIS_SERVER}/{db}"


def shapes_photo(h: int, w: int, seed: int = 0, one_class: bool = False) -> np.ndarray:
    """(h, w, 3) uint8 picture in the bundled demo model's domain: a red disc (and, unless
    `one_class`, a blue triangle) on a smooth, lightly noisy background, as a photo compresses."""
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    ramp = np.linspace(100, 150, w, dtype=np.float32)[None, :, None] + np.linspace(0, 20, h)[:, None, None]
    bg = np.clip(ramp + rng.normal(0, 4, (h, w, 3)), 0, 255).astype(np.uint8)
    img = Image.fromarray(bg)
    d = ImageDraw.Draw(img)
    r = min(h, w) // 5
    d.ellipse([w // 5, h // 5, w // 5 + 2 * r, h // 5 + 2 * r], fill=(220, 40, 40))
    if not one_class:
        d.polygon([(w * 3 // 5, h * 4 // 5), (w * 9 // 10, h * 4 // 5), (w * 3 // 4, h // 3)], fill=(40, 60, 220))
    return np.asarray(img)


def wait_until(predicate: Callable[[], T], timeout: float = 10.0, interval: float = 0.02,
               what: str | Callable[[], str] | None = None) -> T:
    """Call `predicate` until it returns something truthy, and return that. `timeout` is a
    generous deadline for a loaded machine, not the expected time: the wait ends as soon as
    the condition holds. On the deadline: AssertionError naming `what` (a string, or a
    callable giving one, e.g. the current state)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            detail = what() if callable(what) else what
            raise AssertionError(f"not within {timeout} s: {detail or getattr(predicate, '__name__', predicate)}")
        time.sleep(interval)


def wait_done(client, job_id: str, timeout: float = 30.0, until: Callable[[dict], bool] | None = None,
              headers: dict[str, str] | None = None) -> dict:
    """GET /jobs/{id} (TestClient or httpx.Client) until the job has ended, or until
    until(body); returns that body."""
    last: list[dict] = [{}]

    def check() -> dict | None:
        body = last[0] = client.get(f"/jobs/{job_id}", headers=headers or {}).json()
        done = until(body) if until is not None else body.get("state") not in ("queued", "running")
        return body if done else None

    return wait_until(check, timeout, 0.05, lambda: f"job {job_id} not done: {last[0]}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def service_env(**extra: str) -> dict[str, str]:
    """This process's environment without the developer's SEAM_* settings, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEAM_")}
    env.update(extra)
    return env


def clear_seam_env(monkeypatch: Any) -> None:
    """SEAM_* variables of the developer's shell must not leak into in-process tests."""
    for k in list(os.environ):
        if k.startswith("SEAM_"):
            monkeypatch.delenv(k)


def log_tail(log: Path, chars: int = 4000) -> str:
    return log.read_text(errors="replace")[-chars:] if log.exists() else ""


class ServerNotReady(RuntimeError):
    pass


def wait_ready(url: str, proc: subprocess.Popen, log: Path, timeout: float = 60.0, interval: float = 0.1) -> None:
    """Until GET {url}/readyz answers 200; ServerNotReady (with the log's tail) when the
    process exits first or the deadline passes."""

    def ready() -> bool:
        if proc.poll() is not None:
            raise ServerNotReady(f"the server exited ({proc.returncode}); log:\n{log_tail(log)}")
        try:
            return httpx.get(f"{url}/readyz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_until(ready, timeout, interval)
    except AssertionError:
        raise ServerNotReady(f"{url} not ready in {timeout} s; log:\n{log_tail(log)}") from None


def spawn(argv: Sequence[str], env: dict[str, str], log: Path, **popen: Any) -> subprocess.Popen:
    """A child process in the repository root, stdout and stderr appended to `log`."""
    with log.open("ab") as out:  # the child keeps its own descriptor
        return subprocess.Popen(list(argv), cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, **popen)


def start_server(argv: Callable[[int], Sequence[str]], env: dict[str, str], log: Path, timeout: float = 60.0,
                 attempts: int = 3, **popen: Any) -> tuple[str, subprocess.Popen]:
    """Run `argv(port)` on a free loopback port and wait until it is ready: (base URL, process).
    A few attempts, as the port may be taken between probing it and the server binding it."""
    last: ServerNotReady | None = None
    for _ in range(attempts):
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        proc = spawn(argv(port), env, log, **popen)
        try:
            wait_ready(url, proc, log, timeout)
            return url, proc
        except ServerNotReady as exc:
            stop_process(proc)
            last = exc
    raise RuntimeError(f"the service did not become ready: {last}")


def uvicorn_argv(port: int) -> list[str]:
    """The app factory under uvicorn (what the container runs); configured by SEAM_* variables."""
    return [sys.executable, "-m", "uvicorn", "--factory", "seam.service.main:create_app", "--host", "127.0.0.1",
            "--port", str(port), "--log-level", "warning", "--no-access-log"]


def seam_serve_argv(port: int) -> list[str]:
    """`seam serve` (the CLI entry point) on loopback."""
    return [sys.executable, "-m", "seam.cli", "serve", "--host", "127.0.0.1", "--port", str(port)]


def stop_process(proc: subprocess.Popen, timeout: float = 10.0) -> None:
    """SIGTERM, then SIGKILL if it has not exited within `timeout`."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


@contextmanager
def serve_in_thread(app: Any) -> Iterator[str]:
    """An ASGI app served by uvicorn in a daemon thread of this process; yields its base URL.
    For tests that need a real socket but not a separate process."""
    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on"))
    t = threading.Thread(target=server.run, daemon=True)
    t.start()
    try:
        wait_until(lambda: server.started or not t.is_alive(), 20, 0.01)
        assert server.started, "uvicorn did not start"
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        t.join(10)


@contextmanager
def entered_clients() -> Iterator[Callable[[Any], Any]]:
    """enter(app) -> a started fastapi TestClient (lifespan run, server exceptions as 500s);
    every client made is shut down, last first, when the block ends."""
    from fastapi.testclient import TestClient

    clients: list[TestClient] = []

    def enter(app: Any) -> TestClient:
        c = TestClient(app, raise_server_exceptions=False)
        c.__enter__()
        clients.append(c)
        return c

    try:
        yield enter
    finally:
        for c in reversed(clients):
            c.__exit__(None, None, None)
