"""Fixtures: project 1 on the fake Label Studio (`fake_ls`, from tests/service/conftest.py), and
the app (fake engine, keys KEY_A and KEY_B, Label Studio settings pointing at the fake, a
recording training submitter)."""
from __future__ import annotations

from pathlib import Path

import pytest
from seam.service.core.config import Settings
from seam.service.fake_engine import FakeEngine
from seam.service.integrations.corrections_fit import CorrectionsSettings
from seam.service.integrations.ls_settings import LabelStudioSettings
from seam.service.main import create_app

from tests.service.corrections.helpers import KEY_A, KEY_B, LsProject, RecordingSubmitter
from tests.service.integrations.helpers import LS_TOKEN
from tests.support import entered_clients


@pytest.fixture
def project(fake_ls) -> LsProject:
    return LsProject(fake_ls)


@pytest.fixture
def submitter() -> RecordingSubmitter:
    return RecordingSubmitter()


@pytest.fixture
def client(tmp_path: Path, fake_ls, submitter):
    settings = Settings(data_dir=tmp_path / "data", engine="fake", warmup=False, models_dir=tmp_path / "models",
                        api_keys=[KEY_A, KEY_B])
    app = create_app(settings, engine=FakeEngine())
    app.state.labelstudio_settings = LabelStudioSettings(url=fake_ls.url, api_key=LS_TOKEN, allow_private=True)
    app.state.submit_training = submitter
    app.state.corrections_settings = CorrectionsSettings(webhook_wait_s=0)  # the fake has no webhook to find
    with entered_clients() as enter:
        yield enter(app)
