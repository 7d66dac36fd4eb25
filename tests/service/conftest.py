from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from service.core.config import Settings
from service.main import create_app
from tests.service.fakes import FakeEngine
from tests.service.helpers import redis_client

API_KEY = "k" * 24


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """SEAM_* variables of the developer's shell must not leak into the tests."""
    for k in list(os.environ):
        if k.startswith("SEAM_"):
            monkeypatch.delenv(k)


@pytest.fixture
def allowed_root(tmp_path: Path) -> Path:
    root = tmp_path / "allowed"
    root.mkdir()
    return root


@pytest.fixture
def make_settings(tmp_path: Path, allowed_root: Path) -> Callable[..., Settings]:
    def make(**kw) -> Settings:
        base = dict(data_dir=tmp_path / "data", engine="fake", allowed_root=allowed_root, warmup=True,
                    chunk_size=4, models_dir=tmp_path / "models")
        base.update(kw)
        return Settings(**base)
    return make


@pytest.fixture
def make_client(make_settings) -> Iterator[Callable[..., TestClient]]:
    stack = []

    @contextmanager
    def _noop():
        yield

    def make(engine: FakeEngine | None = None, **kw) -> TestClient:
        app = create_app(make_settings(**kw), engine=engine or FakeEngine())
        client = TestClient(app, raise_server_exceptions=False)
        client.__enter__()
        stack.append(client)
        return client

    yield make
    for c in reversed(stack):
        c.__exit__(None, None, None)


@pytest.fixture
def client(make_client) -> TestClient:
    return make_client()


@pytest.fixture(scope="module")
def redis_ok() -> None:
    """Skips the end-to-end tests that need Redis when none is running on loopback."""
    try:
        redis_client().ping()
    except Exception:
        pytest.skip("no Redis on 127.0.0.1:6379 (`redis-server --daemonize yes`)")
