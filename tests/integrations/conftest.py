"""Fixtures: the app with the fake engine, and a fake Label Studio on loopback."""
from __future__ import annotations

import io
import os
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from service.core.config import Settings
from service.fake_engine import FakeEngine
from service.integrations.labelstudio import LabelStudioSettings
from service.main import create_app

LS_TOKEN = "ls-token-0123456789abcdef"


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for k in list(os.environ):
        if k.startswith("SEAM_"):
            monkeypatch.delenv(k)


def png_bytes(rgb: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG")
    return buf.getvalue()


def scene(h: int, w: int, seed: int = 0) -> np.ndarray:
    """Grey noise with a red and a blue block (the fake engine's classes are colours)."""
    rng = np.random.default_rng(seed)
    rgb = rng.integers(90, 120, (h, w, 3)).astype(np.uint8)
    rgb[h // 6: h // 2, 1: w // 2] = (230, 20, 25)
    rgb[h // 2: h - 2, w // 2: w - 3] = (15, 30, 240)
    return rgb


class FakeLabelStudio:
    """A loopback HTTP server standing in for Label Studio: serves files under /data/...
    to requests carrying its token, and records every request it receives."""

    def __init__(self, token: str = LS_TOKEN) -> None:
        self.files: dict[str, bytes] = {}
        self.redirects: dict[str, str] = {}
        self.requests: list[tuple[str, dict[str, str]]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a) -> None:  # quiet
                pass

            def do_GET(self) -> None:
                outer.requests.append((self.path, {k.lower(): v for k, v in self.headers.items()}))
                if self.path in outer.redirects:
                    self.send_response(302)
                    self.send_header("Location", outer.redirects[self.path])
                    self.end_headers()
                    return
                if self.headers.get("Authorization") != f"Token {token}":
                    self.send_response(401)
                    self.end_headers()
                    return
                body = outer.files.get(self.path)
                if body is None:
                    self.send_response(404)
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("Content-Type", "image/png")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def fake_ls() -> Iterator[FakeLabelStudio]:
    s = FakeLabelStudio()
    yield s
    s.close()


@pytest.fixture
def other_server() -> Iterator[FakeLabelStudio]:
    """A second loopback server (another origin) that must never be reached."""
    s = FakeLabelStudio(token="other")
    yield s
    s.close()


@pytest.fixture
def make_app(tmp_path: Path) -> Iterator[Callable[..., TestClient]]:
    clients: list[TestClient] = []

    def make(ls: LabelStudioSettings | None = None, engine: FakeEngine | None = None, **kw) -> TestClient:
        base = dict(data_dir=tmp_path / "data", engine="fake", warmup=False, models_dir=tmp_path / "models",
                    chunk_size=4)
        base.update(kw)
        app = create_app(Settings(**base), engine=engine or FakeEngine())
        app.state.labelstudio_settings = ls
        c = TestClient(app, raise_server_exceptions=False)
        c.__enter__()
        clients.append(c)
        return c

    yield make
    for c in reversed(clients):
        c.__exit__(None, None, None)


@pytest.fixture
def live_api(tmp_path: Path) -> Iterator[str]:
    """The real app (fake engine) served by uvicorn on loopback; yields its base URL."""
    import socket
    import time

    import uvicorn

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    settings = Settings(data_dir=tmp_path / "live", engine="fake", warmup=False, models_dir=tmp_path / "models",
                        api_keys=["live-key-0123456789abcdef"])
    server = uvicorn.Server(uvicorn.Config(create_app(settings, engine=FakeEngine()), host="127.0.0.1", port=port,
                                           log_level="warning", lifespan="on"))
    t = threading.Thread(target=server.run, daemon=True)
    t.start()
    deadline = time.time() + 20
    while not server.started and time.time() < deadline:
        time.sleep(0.05)
    assert server.started, "uvicorn did not start"
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    t.join(10)


LIVE_KEY = "live-key-0123456789abcdef"
