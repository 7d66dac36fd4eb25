"""Fixtures: the app with the fake engine and Label Studio settings, and a fake Label Studio on
loopback (the SEAM_* environment is cleared by tests/service/conftest.py)."""
from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from seam.service.core.config import Settings
from seam.service.fake_engine import FakeEngine
from seam.service.integrations.ls_settings import LabelStudioSettings
from seam.service.main import create_app

from tests.service.integrations.helpers import LIVE_KEY, FakeLabelStudio
from tests.support import entered_clients, serve_in_thread


@pytest.fixture
def other_server() -> Iterator[FakeLabelStudio]:
    """A second loopback server (another origin) that must never be reached."""
    s = FakeLabelStudio(token="other")
    yield s
    s.close()


@pytest.fixture
def make_app(tmp_path: Path) -> Iterator[Callable[..., TestClient]]:
    """make(ls=None, engine=None, **settings) -> a started client of the app with those
    Label Studio settings (the fake engine by default)."""
    def app(ls: LabelStudioSettings | None, engine: FakeEngine | None, **kw):
        base = dict(data_dir=tmp_path / "data", engine="fake", warmup=False, models_dir=tmp_path / "models",
                    chunk_size=4)
        base.update(kw)
        a = create_app(Settings(**base), engine=engine or FakeEngine())
        a.state.labelstudio_settings = ls
        return a

    with entered_clients() as enter:
        yield lambda ls=None, engine=None, **kw: enter(app(ls, engine, **kw))


@pytest.fixture
def live_api(tmp_path: Path) -> Iterator[str]:
    """The real app (fake engine, API key LIVE_KEY) served by uvicorn on loopback; yields its base URL."""
    settings = Settings(data_dir=tmp_path / "live", engine="fake", warmup=False, models_dir=tmp_path / "models",
                        api_keys=[LIVE_KEY])
    with serve_in_thread(create_app(settings, engine=FakeEngine())) as url:
        yield url
