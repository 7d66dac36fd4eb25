from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from seam.service.core.config import Settings
from seam.service.jobs.stores.base import JobStore
from seam.service.jobs.stores.redis import RedisJobStore
from seam.service.main import create_app

from tests.service.fakes import REDIS_URL, STORE_KINDS, FakeEngine, drop_keys, open_store, redis_reachable
from tests.service.integrations.helpers import FakeLabelStudio
from tests.support import clear_seam_env, entered_clients


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    clear_seam_env(monkeypatch)


@pytest.fixture
def fake_ls() -> Iterator[FakeLabelStudio]:
    s = FakeLabelStudio()
    yield s
    s.close()


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


@pytest.fixture(params=STORE_KINDS)
def store(request, tmp_path: Path) -> Iterator[JobStore]:
    """Each job store in turn (memory, SQLite, Redis): the one contract they all keep."""
    with open_store(request.param, tmp_path) as s:
        yield s


@pytest.fixture(params=["embedded", "redis-store"])
def mode(request) -> str:
    """API tests run with the embedded SQLite store and with the Redis store of Celery mode
    (jobs processed by in-process threads either way)."""
    if request.param == "redis-store" and not redis_reachable():
        pytest.skip("no Redis on 127.0.0.1:6379")
    return request.param


@pytest.fixture
def app_client(make_settings) -> Iterator[Callable[..., TestClient]]:
    """make(mode="embedded", engine=None, **settings) -> a started client whose jobs live in the
    SQLite store (embedded) or in a Redis store under a key prefix of its own (redis-store)."""
    redis_stores: list[tuple[RedisJobStore, str]] = []
    with entered_clients() as enter:
        def make(mode: str = "embedded", engine=None, **kw) -> TestClient:
            store = None
            if mode == "redis-store":
                prefix = f"seamtest-{uuid.uuid4().hex[:8]}"
                store = RedisJobStore(REDIS_URL, prefix, 3600)
                redis_stores.append((store, prefix))
            return enter(create_app(make_settings(**kw), engine=engine or FakeEngine(), store=store))

        yield make
    for s, prefix in redis_stores:
        drop_keys(s.r, f"{prefix}:")
