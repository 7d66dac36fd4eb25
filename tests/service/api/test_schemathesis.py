"""Property-based fuzzing of every operation in the app's own OpenAPI schema: whatever
schemathesis generates, the answer is never a 5xx, and every 4xx uses the error shape.
The server has an API key (as in production); every case is sent with it, and once more
without it (which must be a 401, never a 5xx)."""
from __future__ import annotations

import json
import re
import tempfile
from pathlib import Path

import pytest

schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, settings
from seam.service.core.config import Settings
from seam.service.integrations.ls_settings import LabelStudioSettings
from seam.service.main import create_app

from tests.service.fakes import FakeEngine

pytestmark = pytest.mark.slow  # ~12 generated cases x 2 per operation: seconds in all

API_KEY = "fuzz-key-" + "k" * 16

_tmp = Path(tempfile.mkdtemp(prefix="seam-fuzz-"))
(_tmp / "allowed").mkdir()
app = create_app(Settings(data_dir=_tmp / "data", allowed_root=_tmp / "allowed", engine="fake", warmup=False,
                          max_upload_mb=2, max_job_upload_mb=2, max_archive_members=50, max_archive_bytes=1 << 20,
                          api_keys=[API_KEY]),
                 engine=FakeEngine())
# The Label Studio backend configured (else its routes answer 503 "not configured", by design),
# towards a closed loopback port: image fetches fail at once.
app.state.labelstudio_settings = LabelStudioSettings(url="http://127.0.0.1:9", api_key="fuzz-ls-token",
                                                     allow_private=True, fetch_timeout_s=2)
schema = schemathesis.openapi.from_asgi("/openapi.json", app)


@pytest.fixture(scope="module", autouse=True)
def _lifespan():
    from fastapi.testclient import TestClient

    with TestClient(app):  # runs the lifespan (store, executor) for the whole module
        yield


# (method, path) -> the request-body media types the generated cases used
BODIES_SENT: dict[tuple[str, str], set[str]] = {}


def body_media_types() -> dict[tuple[str, str], set[str]]:
    """Every operation's request-body media types, from the app's schema."""
    out: dict[tuple[str, str], set[str]] = {}
    for path, ops in app.openapi()["paths"].items():
        for method, op in ops.items():
            if isinstance(op, dict) and "requestBody" in op:
                out[(method.upper(), path)] = set(op["requestBody"]["content"])
    return out


def test_schema_refs_resolve():
    # an unresolvable $ref (DirectoryJobRequest) made Schemathesis skip the JSON body of POST /jobs
    doc = app.openapi()
    text = json.dumps(doc)
    refs = set(re.findall(r'"\$ref": "#/components/schemas/([^"]+)"', text))
    assert refs and refs <= set(doc["components"]["schemas"]), refs - set(doc["components"]["schemas"])
    assert ("POST", "/jobs") in body_media_types() and "application/json" in body_media_types()[("POST", "/jobs")]


@schema.parametrize()
@settings(max_examples=12, deadline=None, derandomize=True,
          suppress_health_check=list(HealthCheck))
def test_no_server_errors(case):
    if case.media_type:
        BODIES_SENT.setdefault((case.method.upper(), case.path), set()).add(case.media_type)
    for headers, anonymous in (({"X-API-Key": API_KEY}, False), ({}, True)):
        response = case.call(headers=headers)
        assert response.status_code < 500, (case.method, case.path, response.status_code, response.text[:500])
        if anonymous and case.path not in ("/healthz", "/readyz", "/metrics", "/outputs"):  # public by design
            assert 400 <= response.status_code < 500, (case.method, case.path, response.status_code)  # never served
        if response.status_code >= 400:
            body = response.json()
            assert set(body) >= {"error"} and {"code", "message"} <= set(body["error"]), body
            assert str(_tmp) not in response.text, response.text  # no server paths in error bodies


def test_every_request_body_was_fuzzed():
    """Runs after test_no_server_errors (file order): every media type of every operation's body was sent."""
    if not BODIES_SENT:
        pytest.skip("run with test_no_server_errors")
    missing = {op: types - BODIES_SENT.get(op, set()) for op, types in body_media_types().items()}
    assert not {op: m for op, m in missing.items() if m}, missing
