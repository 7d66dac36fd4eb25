from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from seam.service.core.config import Settings
from seam.service.main import create_app

from tests.service.fakes import FakeEngine
from tests.service.helpers import redis_reachable
from tests.support import clear_seam_env, entered_clients


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    clear_seam_env(monkeypatch)


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
    """make(engine=None, **settings) -> a started client of the app (the fake engine by default)."""
    with entered_clients() as enter:
        yield lambda engine=None, **kw: enter(create_app(make_settings(**kw), engine=engine or FakeEngine()))


@pytest.fixture
def client(make_client) -> TestClient:
    return make_client()


@pytest.fixture(scope="module")
def redis_ok() -> None:
    """Skips the end-to-end tests that need Redis when none is running on loopback."""
    if not redis_reachable():
        pytest.skip("no Redis on 127.0.0.1:6379 (`redis-server --daemonize yes`)")
