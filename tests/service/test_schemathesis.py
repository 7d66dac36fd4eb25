"""Property-based fuzzing of every operation in the app's own OpenAPI schema: whatever
schemathesis generates, the answer is never a 5xx, and every 4xx uses the error shape.
The server has an API key (as in production); every case is sent with it, and once more
without it (which must be a 401, never a 5xx)."""
from __future__ import annotations

import tempfile
from pathlib import Path

import pytest

schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, settings

from service.core.config import Settings
from service.main import create_app
from tests.service.fakes import FakeEngine

pytestmark = pytest.mark.slow  # ~12 generated cases x 2 per operation: seconds in all

API_KEY = "fuzz-key-" + "k" * 16

_tmp = Path(tempfile.mkdtemp(prefix="seam-fuzz-"))
(_tmp / "allowed").mkdir()
app = create_app(Settings(data_dir=_tmp / "data", allowed_root=_tmp / "allowed", engine="fake", warmup=False,
                          max_upload_mb=2, max_job_upload_mb=2, max_archive_members=50, max_archive_bytes=1 << 20,
                          api_keys=[API_KEY]),
                 engine=FakeEngine())
schema = schemathesis.openapi.from_asgi("/openapi.json", app)


@pytest.fixture(scope="module", autouse=True)
def _lifespan():
    from fastapi.testclient import TestClient

    with TestClient(app):  # runs the lifespan (store, executor) for the whole module
        yield


@schema.parametrize()
@settings(max_examples=12, deadline=None, derandomize=True,
          suppress_health_check=list(HealthCheck))
def test_no_server_errors(case):
    for headers, anonymous in (({"X-API-Key": API_KEY}, False), ({}, True)):
        response = case.call(headers=headers)
        assert response.status_code < 500, (case.method, case.path, response.status_code, response.text[:500])
        if anonymous and case.path not in ("/healthz", "/readyz", "/metrics"):
            assert 400 <= response.status_code < 500, (case.method, case.path, response.status_code)  # never served
        if response.status_code >= 400:
            body = response.json()
            assert set(body) >= {"error"} and {"code", "message"} <= set(body["error"]), body
            assert str(_tmp) not in response.text, response.text  # no server paths in error bodies
