"""What the service tests check and send again and again: the error body's shape, a job's archive
and its results, job submission and waiting under an API key, and the keys used for it."""
from __future__ import annotations

import io
import uuid
import zipfile

import numpy as np
from fastapi.testclient import TestClient
from PIL import Image

from tests.service.fakes.engines import FakeEngine
from tests.service.fakes.inputs import encode, rgb_image, zip_bytes
from tests.support import wait_done

KEY_A = "a" * 24
KEY_B = "b" * 24
ADMIN = "z" * 24


def jid() -> str:
    """A fresh job id."""
    return uuid.uuid4().hex


def assert_error(r, status: int, code: str | None = None, contains: str | None = None) -> dict:
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error"} and {"code", "message"} <= set(body["error"]), body
    if code:
        assert body["error"]["code"] == code, body
    if contains:
        assert contains.lower() in body["error"]["message"].lower(), body
    return body["error"]


def make_archive(n: int) -> tuple[bytes, dict[str, np.ndarray]]:
    imgs = {f"im{i:02d}": rgb_image(20 + i % 4, 28 + i % 3, seed=i) for i in range(n)}
    return zip_bytes({f"{k}.png": encode(a) for k, a in imgs.items()}), imgs


def check_results(client, job_id: str, imgs: dict[str, np.ndarray]) -> None:
    r = client.get(f"/jobs/{job_id}/results")
    assert r.status_code == 200
    zf = zipfile.ZipFile(io.BytesIO(r.content))
    pngs = [n for n in zf.namelist() if n.startswith("png/")]
    assert len(pngs) == len(set(pngs)) == len(imgs)  # every image exactly once
    engine = FakeEngine()
    for iid, a in imgs.items():
        got = np.asarray(Image.open(io.BytesIO(zf.read(f"png/{iid}.png"))))
        assert np.array_equal(got, engine.segment(a).label), iid


def post_job(c: TestClient, archive: bytes, key: str | None = None, **fields):
    headers = {"X-API-Key": key} if key else {}
    return c.post("/jobs", files={"archive": ("a.zip", archive, "application/octet-stream")}, data=fields,
                  headers=headers)


def wait(c: TestClient, job_id: str, key: str | None = None, timeout: float = 30.0) -> dict:
    return wait_done(c, job_id, timeout, headers={"X-API-Key": key} if key else None)
