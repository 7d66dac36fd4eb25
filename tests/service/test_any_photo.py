"""Phone photos through the real service: `seam serve` with the bundled demo model, in a
process whose address space is capped (`RLIMIT_AS`), so that a memory blow-up fails the
test (MemoryError / a killed server) instead of the machine."""
from __future__ import annotations

import io
import os
import resource
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import httpx
import numpy as np
import psutil
import pytest
from PIL import Image

from tests.service.helpers import free_port

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
# Before the fix one 1024x1024 photo took the server to 23.6 GB; 3 GiB of address space
# holds Python, onnxruntime, the demo model and a 12-megapixel photo's buffers.
ADDRESS_SPACE = 3 << 30


def photo(h: int, w: int, seed: int = 0) -> bytes:
    """A smooth JPEG with a few coloured blobs (compresses like a photo, not like noise)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    img = np.empty((h, w, 3), np.float32)
    img[..., 0], img[..., 1], img[..., 2] = 90 + 60 * np.sin(xx / 97), 110 + 50 * np.cos(yy / 83), 120
    for _ in range(4):
        cy, cx, r = rng.uniform(0, h), rng.uniform(0, w), rng.uniform(0.05, 0.2) * min(h, w)
        img[(yy - cy) ** 2 + (xx - cx) ** 2 < r * r] = rng.uniform(0, 255, 3)
    buf = io.BytesIO()
    Image.fromarray(img.clip(0, 255).astype(np.uint8)).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def _cap() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (ADDRESS_SPACE, ADDRESS_SPACE))


def serve_demo(data_dir: Path, log: Path, cap: bool = True, **env_extra: str) -> tuple[str, subprocess.Popen]:
    """`seam serve` over the repository's models/ (embedded mode) on a free port, ready;
    under the address-space cap unless cap=False. (url, process)."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEAM_")}
    env.update({"PYTHONPATH": str(REPO), "SEAM_MODELS_DIR": str(REPO / "models"), "SEAM_DATA_DIR": str(data_dir),
                "SEAM_THREADS": "2", "MALLOC_ARENA_MAX": "2", "OMP_NUM_THREADS": "2", **env_extra})
    with open(log, "wb") as out:  # the child keeps its own descriptor
        proc = subprocess.Popen([sys.executable, "-m", "seam.cli", "serve", "--port", str(port)], cwd=REPO,
                                env=env, stdout=out, stderr=subprocess.STDOUT, preexec_fn=_cap if cap else None)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("server exited: " + log.read_text())
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return url, proc
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    proc.kill()
    raise RuntimeError("server not ready: " + log.read_text())


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("anyphoto")
    url, proc = serve_demo(tmp / "data", tmp / "serve.log", SEAM_MEMORY_BUDGET_MB="1024")
    yield url, proc, tmp
    proc.terminate()
    proc.wait(10)


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
    deadline = time.time() + 300
    while time.time() < deadline:
        st = httpx.get(f"{url}/jobs/{job}", timeout=10).json()
        if st["state"] in ("succeeded", "failed", "cancelled"):
            break
        time.sleep(0.5)
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
