"""Limits at the API edge: label tables and JSON bodies capped, deeply nested JSON refused, a
chunked upload past the limit answered 413 with nothing kept."""
from __future__ import annotations

import json

import numpy as np

from tests.service.fakes import (
    assert_error,
    png_bytes,
    post_job,
    zip_bytes,
)


def test_label_tables_and_json_bodies_are_capped(app_client, allowed_root):
    c = app_client(max_labels_bytes=4096)
    big = json.dumps({f"img{i}.png": ["red"] for i in range(400)}).encode()
    assert len(big) > 4096
    arch = zip_bytes({"a.png": png_bytes(8, 8), "labels.json": big})
    assert_error(post_job(c, arch), 413, "labels_too_large")
    r = c.post("/jobs", files={"archive": ("a.zip", zip_bytes({"a.png": png_bytes(8, 8)})),
                               "labels": ("l.json", big, "application/json")})
    assert_error(r, 413, "labels_too_large")
    (allowed_root / "d").mkdir()
    (allowed_root / "d" / "a.png").write_bytes(png_bytes(8, 8))
    body = json.dumps({"directory": "d", "labels": {f"img{i}": ["red"] for i in range(400)}})
    assert_error(c.post("/jobs", content=body, headers={"content-type": "application/json"}), 413, "too_large")
    assert c.app.state.storage.job_ids() == []


def test_deeply_nested_json_is_422(app_client, allowed_root):
    c = app_client()
    deep = b'{"a.png": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    assert_error(post_job(c, zip_bytes({"a.png": png_bytes(8, 8), "labels.json": deep})), 422, "invalid_labels")
    r = c.post("/jobs", files={"archive": ("a.zip", zip_bytes({"a.png": png_bytes(8, 8)})),
                               "labels": ("l.json", deep, "application/json")})
    assert_error(r, 422, "invalid_labels")
    body = b'{"directory": "d", "labels": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    assert_error(c.post("/jobs", content=body, headers={"content-type": "application/json"}), 422)


def test_chunked_upload_past_the_limit_is_413_and_nothing_kept(app_client):
    # No Content-Length: httpx sends a generator body with Transfer-Encoding: chunked, so only
    # the running count of the body middleware can stop it.
    c = app_client(max_job_upload_mb=1, max_upload_mb=1)
    archive = zip_bytes({f"im{i}.bmp": np.random.default_rng(i).integers(0, 255, (300, 300, 3), np.uint8).tobytes()
                         for i in range(12)})
    assert len(archive) > 2 << 20
    head = b"--B\r\nContent-Disposition: form-data; name=\"archive\"; filename=\"a.zip\"\r\n\r\n"
    sent = []

    def body():
        for part in (head, *(archive[i:i + 65536] for i in range(0, len(archive), 65536)), b"\r\n--B--\r\n"):
            sent.append(len(part))
            yield part

    r = c.post("/jobs", content=body(), headers={"content-type": "multipart/form-data; boundary=B"})
    assert_error(r, 413, "too_large")
    assert sent  # went through the generator (chunked), no Content-Length
    assert c.app.state.storage.job_ids() == [] and c.get("/jobs").json()["total"] == 0
    data = c.app.state.settings.data_dir
    assert not [p for p in data.rglob("*") if p.is_file() and not p.name.startswith("jobs.sqlite3")]
    r = c.post("/segment", content=(b"\x89PNG" + bytes(65536) for _ in range(40)),
               headers={"content-type": "multipart/form-data; boundary=B"})
    assert_error(r, 413, "too_large")
