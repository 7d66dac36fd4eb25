"""Hot reload in broker mode: a real `seam worker` (Celery, Redis) and `seam serve` over a
versioned repository of real ONNX versions of the demo model. A version published and promoted
while both run answers /segment without a restart (the delay from promotion to the first answer
by it is measured); a pinned older version still answers; a job pinned to a version runs on it
in the worker, whatever is promoted meanwhile."""
from __future__ import annotations

import io
import time
import zipfile
from pathlib import Path

import httpx
import pytest

from seam.modelrepo import versions
from testkit.processes import wait_until
from testkit.versions import BG, png_bytes, publish_variant
from tests.service.fakes import Stack
from tests.support import shapes_photo

pytestmark = pytest.mark.slow


def _segment(c: httpx.Client, img: bytes, **data) -> httpx.Response:
    return c.post("/segment", files={"image": ("x.png", img, "image/png")}, data=data)


def test_worker_hot_reload_and_pinned_versions(tmp_path: Path, redis_ok) -> None:
    from PIL import Image

    repo = tmp_path / "models"
    for n in (1, 2):
        publish_variant(repo, "shapes", BG[n], tmp_path)
    allowed = tmp_path / "allowed"
    allowed.mkdir()
    rgb = shapes_photo(64, 96)
    Image.fromarray(rgb).save(allowed / "a.png")
    img = png_bytes(rgb)
    (tmp_path / "stack").mkdir()
    s = Stack(tmp_path / "stack", "celery", SEAM_ENGINE="onnx", SEAM_MODELS_DIR=str(repo), SEAM_MODELS_POLL_S="0.2",
              SEAM_WORKER_HEARTBEAT_S="1", SEAM_THREADS="1", SEAM_ALLOWED_ROOT=str(allowed),
              SEAM_REQUEST_TIMEOUT_S="30")
    try:
        s.start_worker("w1")
        s.start_api()
        with httpx.Client(base_url=s.url, timeout=60) as c:
            wait_until(lambda: c.get("/readyz").status_code == 200, 90, 0.2, lambda: s.logs("w1") + s.logs("api"))
            first = _segment(c, img)
            assert first.status_code == 200, first.text
            assert first.headers["X-Seam-Model"] == "shapes:1" and first.headers["X-Seam-Worker"].startswith("w1@")
            v2 = _segment(c, img, model="shapes:2")
            assert v2.headers["X-Seam-Model"] == "shapes:2" and v2.content != first.content

            # publish and promote a third version while API and worker run
            t0 = time.perf_counter()
            assert publish_variant(repo, "shapes", 0.3, tmp_path, promote=True) == 3
            wait_until(lambda: _segment(c, img).headers.get("X-Seam-Model") == "shapes:3", 60, 0.05,
                       lambda: s.logs("w1"))
            delay = time.perf_counter() - t0
            print(f"broker mode: publish+promote -> first /segment by the new version: {delay:.2f} s "
                  "(SEAM_MODELS_POLL_S=0.2)")
            third = _segment(c, img)
            assert third.content not in (first.content, v2.content)
            pinned = _segment(c, img, model="shapes:1")
            assert pinned.headers["X-Seam-Model"] == "shapes:1" and pinned.content == first.content
            workers = c.get("/readyz").json()["checks"]["workers"]
            assert workers["ok"], workers

            # a job pinned to version 1 runs on it in the worker while 3 is promoted
            job = c.post("/jobs", json={"directory": ".", "model": "shapes:1"}).json()
            assert job["model"] == "shapes:1", job
            wait_until(lambda: c.get(f"/jobs/{job['id']}").json()["state"] not in ("queued", "running"), 90, 0.1)
            snap = c.get(f"/jobs/{job['id']}").json()
            assert snap["state"] == "succeeded", snap
            with zipfile.ZipFile(io.BytesIO(c.get(f"/jobs/{job['id']}/results").content)) as z:
                assert z.read("png/a.png") == first.content  # version 1's mask, byte for byte
            versions.rollback(repo, "shapes")  # back to 1 (the previous promoted)
            wait_until(lambda: _segment(c, img).headers.get("X-Seam-Model") == "shapes:1", 60, 0.05)
    finally:
        s.stop()
