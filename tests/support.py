"""What the test directories share and the benchmarks do not: import names of source files,
the test Redis, a demo-domain picture, waiting for a job, and the service in a thread of the
test process (uvicorn) or under TestClient. Polling (`wait_until`) and server processes
(`start_server`, `stop_process`, ...) live in testkit/processes.py, shared with bench/.

Not a test module: test modules and conftest.py files import from here, never from each other.
"""
from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from testkit import REPO
from testkit.processes import free_port, wait_until

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


def clear_seam_env(monkeypatch: Any) -> None:
    """SEAM_* variables of the developer's shell must not leak into in-process tests."""
    for k in list(os.environ):
        if k.startswith("SEAM_"):
            monkeypatch.delenv(k)


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
