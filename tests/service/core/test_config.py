"""Settings: from the environment, their defaults, and the bad values refused."""
from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError
from seam.service.core.config import Settings

from tests.support import redis_url


def test_settings_from_env(monkeypatch, tmp_path):
    monkeypatch.setenv("SEAM_API_KEYS", "a" * 16 + ", " + "b" * 20)
    monkeypatch.setenv("SEAM_CORS_ORIGINS", "https://a.example,https://b.example")
    monkeypatch.setenv("SEAM_BROKER_URL", redis_url(3))
    monkeypatch.setenv("SEAM_MAX_PIXELS", "1000")
    monkeypatch.setenv("SEAM_DATA_DIR", str(tmp_path))
    s = Settings()
    assert s.api_keys == ["a" * 16, "b" * 20] and len(s.cors_origins) == 2
    assert s.mode == "celery" and s.max_pixels == 1000 and s.data_dir == tmp_path
    assert s.visibility_timeout > s.task_time_limit_s


def test_settings_defaults(monkeypatch):
    s = Settings()
    assert s.mode == "embedded" and s.models_dir == Path("models") and s.api_keys == []
    assert str(s.data_dir).endswith("seam")


@pytest.mark.parametrize("kw,match", [
    ({"api_keys": ["short"]}, "16 characters"),
    ({"broker_url": "amqp://x"}, "redis"),
    ({"chunk_size": 0}, "chunk_size"),
    ({"max_upload_mb": -1}, "max_upload_mb"),
    ({"task_soft_time_limit_s": 600, "task_time_limit_s": 600}, "soft"),
    ({"visibility_timeout_s": 100, "task_time_limit_s": 600, "task_soft_time_limit_s": 500}, "visibility"),
    ({"allowed_root": "/definitely/not/here"}, "not a directory"),
    ({"key_prefix": "bad prefix!"}, "key_prefix"),
    ({"engine": "torch"}, "engine"),
])
def test_settings_refuse_bad_values(kw, match):
    with pytest.raises(ValidationError, match=match):
        Settings(**kw)
