"""Authentication before the body (the ASGI app driven directly): an unauthenticated upload is
refused before its body is read, a stalled body times out, a valid key still uploads."""
from __future__ import annotations

import asyncio
import json
import time

import pytest
from seam.service.main import create_app

from tests.service.fakes import (
    KEY_A,
    FakeEngine,
    assert_error,
    png_bytes,
)


# --- authentication before the body -------------------------------------------------------
def _asgi_call(app, method: str, path: str, headers: dict[str, str], body_chunks, stall_s: float = 0.0):
    """Drive the ASGI app directly; returns (status, body, body bytes the app asked for)."""
    pulled = {"messages": 0}
    chunks = list(body_chunks)
    sent: list[dict] = []

    async def receive():
        pulled["messages"] += 1
        if stall_s:
            await asyncio.sleep(stall_s)
        if chunks:
            data = chunks.pop(0)
            return {"type": "http.request", "body": data, "more_body": bool(chunks)}
        return {"type": "http.disconnect"}

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method, "path": path,
             "raw_path": path.encode(), "query_string": b"", "root_path": "", "scheme": "http",
             "server": ("test", 80), "client": ("127.0.0.1", 1234),
             "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()]}
    asyncio.run(app(scope, receive, send))
    start = next(m for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return start["status"], json.loads(body), pulled["messages"], dict(start["headers"])


@pytest.mark.parametrize("path", ["/segment", "/cam", "/cam/refined", "/jobs"])
def test_unauthenticated_upload_refused_before_the_body_is_read(make_settings, path):
    app = create_app(make_settings(api_keys=[KEY_A]), engine=FakeEngine())
    size = 20 * 1024 * 1024
    headers = {"content-type": "multipart/form-data; boundary=xyz", "content-length": str(size)}
    for key in (None, "wrong-key-" + "x" * 20):
        h = dict(headers, **({"x-api-key": key} if key else {}))
        status, body, pulled, resp_headers = _asgi_call(app, "POST", path, h, [b"x" * 65536] * 4)
        assert status == 401 and body["error"]["code"] == "unauthorized"
        assert pulled == 0  # not a byte of the body was asked for
        assert resp_headers.get(b"connection") == b"close"
    # with the key, an over-limit Content-Length is refused the same way (413, nothing read)
    status, body, pulled, _ = _asgi_call(app, "POST", path, dict(headers, **{"x-api-key": KEY_A},
                                                                 **{"content-length": str(2 * 1024**3)}), [b""])
    assert status == 413 and pulled == 0


def test_stalled_body_times_out(make_settings):
    app = create_app(make_settings(body_timeout_s=0.2), engine=FakeEngine())
    headers = {"content-type": "multipart/form-data; boundary=xyz", "content-length": "100000"}
    t0 = time.perf_counter()
    status, body, _pulled, _ = _asgi_call(app, "POST", "/segment", headers, [b"--xyz\r\n"] * 3, stall_s=5.0)
    assert status == 408 and body["error"]["code"] == "request_timeout"
    assert time.perf_counter() - t0 < 3.0


def test_valid_key_still_uploads(app_client):
    c = app_client(api_keys=[KEY_A])
    r = c.post("/segment", files={"image": ("x.png", png_bytes(), "image/png")}, headers={"X-API-Key": KEY_A})
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    assert_error(c.post("/segment", files={"image": ("x.png", png_bytes(), "image/png")}), 401)
