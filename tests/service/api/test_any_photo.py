"""Phone photos through the real service: `seam serve` with the bundled demo model, in a
process whose address space is capped (`RLIMIT_AS`), so that a memory blow-up fails the
test (MemoryError / a killed server) instead of the machine."""
from __future__ import annotations

import io
import time
import zipfile

import httpx
import numpy as np
import psutil
import pytest
from PIL import Image

from testkit.demo import ADDRESS_SPACE, photo, serve_demo
from testkit.processes import stop_process
from tests.support import wait_done

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("anyphoto")
    url, proc = serve_demo(tmp / "data", tmp / "serve.log", SEAM_MEMORY_BUDGET_MB="1024")
    yield url, proc, tmp
    stop_process(proc)


def _post(url: str, path: str, data: bytes, **fields: str) -> httpx.Response:
    return httpx.post(f"{url}{path}", files={"image": ("p.jpg", data, "image/jpeg")}, data=fields, timeout=300)


@pytest.mark.parametrize("h,w", [(1024, 1024), (1200, 1600), (3000, 4000), (600, 4000)])
def test_photos_through_every_endpoint(server, h, w):
    url, proc, tmp = server
    data = photo(h, w)
    seg = _post(url, "/segment", data)
    assert seg.status_code == 200, seg.text
    assert Image.open(io.BytesIO(seg.content)).size == (w, h)
    for path in ("/cam", "/cam/refined"):
        r = _post(url, path, data, labels="disc")
        assert r.status_code == 200, r.text
        with np.load(io.BytesIO(r.content), allow_pickle=False) as z:
            assert z["cams"].shape == (1, h, w) and list(z["classes"]) == [0]
    assert proc.poll() is None, (tmp / "serve.log").read_text()
    rss = psutil.Process(proc.pid).memory_info().rss
    assert rss < ADDRESS_SPACE


def test_job_with_phone_photos(server):
    url, proc, tmp = server
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("square.jpg", photo(1024, 1024, 1))
        z.writestr("landscape.jpg", photo(1200, 1600, 2))
        z.writestr("tall.jpg", photo(1600, 1200, 3))
    r = httpx.post(f"{url}/jobs", files={"archive": ("p.zip", buf.getvalue(), "application/zip")},
                   data={"outputs": "png,npz"}, timeout=60)
    assert r.status_code == 202, r.text
    job = r.json()["id"]
    with httpx.Client(base_url=url, timeout=10) as c:
        st = wait_done(c, job, 300)
    assert st["state"] == "succeeded", st
    res = httpx.get(f"{url}/jobs/{job}/results", timeout=60)
    assert res.status_code == 200
    with zipfile.ZipFile(io.BytesIO(res.content)) as z:
        sizes = {n: Image.open(io.BytesIO(z.read(n))).size for n in z.namelist() if n.endswith(".png")}
    assert sorted(sizes.values()) == [(1024, 1024), (1200, 1600), (1600, 1200)]
    assert proc.poll() is None


def test_over_the_memory_budget_is_413_at_once(server):
    url, proc, _ = server
    data = photo(3000, 4000)
    t0 = time.perf_counter()
    r = _post(url, "/segment", data, max_side="2000")
    elapsed = time.perf_counter() - t0
    assert r.status_code == 413, r.text
    body = r.json()
    assert "memory budget" in body["error"]["message"] and "max_side=" in body["error"]["message"]
    suggested = body["error"]["details"]["suggested_max_side"]
    assert 8 <= suggested < 2000
    assert elapsed < 10  # refused from the header, not after running (the passes alone would take minutes)
    ok = _post(url, "/segment", data, max_side=str(suggested))
    assert ok.status_code == 200 and Image.open(io.BytesIO(ok.content)).size == (4000, 3000)
    bad = _post(url, "/segment", data, max_side="4")
    assert bad.status_code == 422
    assert proc.poll() is None
