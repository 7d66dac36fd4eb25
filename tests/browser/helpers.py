"""What the browser tests share: the server's API key, the demo image, where Chromium is,
the app under uvicorn with the fake engine or the bundled demo model
(testkit.processes.start_server), and reading the page's state and canvases."""
from __future__ import annotations

import base64
import os
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np

from testkit.processes import service_env, start_server, uvicorn_argv
from tests.support import REPO

API_KEY = "browser-test-key-0123456789"
FAKE_DELAY_MS = 150  # per fake-engine call: job progress is visible while polling


def chromium_path() -> str | None:
    for cand in (os.environ.get("SEAM_CHROMIUM"), "/usr/bin/chromium", shutil.which("chromium"),
                 shutil.which("chromium-browser"), shutil.which("google-chrome")):
        if cand and Path(cand).is_file():
            return cand
    return None


class Server:
    def __init__(self, url: str, proc: subprocess.Popen, log: Path) -> None:
        self.url, self.proc, self.log = url, proc, log


def start_web_server(tmp: Path, **env_extra: str) -> Server:
    """uvicorn --factory seam.service.main:create_app (embedded mode, SEAM_ENGINE=fake, chunks of one
    image), ready (models warmed) when this returns."""
    env = service_env(SEAM_ENGINE="fake", SEAM_DATA_DIR=str(tmp / "data"), SEAM_MODELS_DIR=str(tmp / "models"),
                      SEAM_FAKE_DELAY_MS=str(FAKE_DELAY_MS), SEAM_CHUNK_SIZE="1", PYTHONUNBUFFERED="1", **env_extra)
    log = tmp / "uvicorn.log"
    url, proc = start_server(uvicorn_argv, env, log, timeout=30)
    return Server(url, proc, log)


def start_demo_model_server(tmp: Path) -> Server:
    """The same app with the real onnxruntime engine over the bundled model (models/seam-demo)."""
    env = service_env(SEAM_ENGINE="onnx", SEAM_DATA_DIR=str(tmp / "data"), SEAM_MODELS_DIR=str(REPO / "models"),
                      PYTHONUNBUFFERED="1")
    log = tmp / "uvicorn.log"
    url, proc = start_server(uvicorn_argv, env, log, timeout=60)
    return Server(url, proc, log)


def wait_js(page, expr: str, arg=None, timeout: float = 15.0) -> None:
    """page.wait_for_function polls with eval(), which the page's CSP forbids (kept on in
    these tests on purpose): poll page.evaluate (CDP, not subject to CSP) instead."""
    deadline = time.monotonic() + timeout
    while not page.evaluate(expr, arg):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {expr}")
        page.wait_for_timeout(50)


def label_map(page) -> np.ndarray:
    """The page's current mask as drawn: (height, width) of its drawing grid."""
    size = page.evaluate("seamPage.size()")
    return np.asarray(page.evaluate("seamPage.labelMap()"), np.uint8).reshape(size["height"], size["width"])


def canvas_rgb(page, selector: str) -> np.ndarray:
    """The pixels a canvas shows, (height, width, 3) uint8."""
    got = page.evaluate("""(sel) => {
        const c = document.querySelector(sel);
        const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        return {w: c.width, h: c.height, b64: btoa(Array.from(d, (v) => String.fromCharCode(v)).join(''))};
    }""", selector)
    data = np.frombuffer(base64.b64decode(got["b64"]), np.uint8)
    return data.reshape(got["h"], got["w"], 4)[..., :3]


def demo_rgb(w: int = 192, h: int = 128, variant: int = 0, fail: bool = False) -> np.ndarray:
    """Grey background, a red area whose redness ramps left to right (so the threshold
    moves its edge), a green block ramping top to bottom, a small blue square (too small
    to be predicted, but its CAM shows when ticked). fail: the fake engine's trigger pixel."""
    rgb = np.full((h, w, 3), 90, np.uint8)
    rw = int(w * (0.5 + 0.08 * variant))
    ramp = np.linspace(70, 255, rw)
    rgb[:, :rw, 0] = ramp[None, :].astype(np.uint8)
    rgb[:, :rw, 1:] = 40
    gy0, gy1, gx0 = int(h * 0.08), int(h * (0.6 + 0.1 * variant)), rw + 8
    gramp = np.linspace(255, 80, gy1 - gy0)
    rgb[gy0:gy1, gx0:w - 6, 1] = gramp[:, None].astype(np.uint8)
    rgb[gy0:gy1, gx0:w - 6, [0, 2]] = 30
    s = 18
    by, bx = h - s - 6, w - s - 10
    rgb[by:by + s, bx:bx + s] = (20, 30, 230)
    if fail:
        rgb[0, 0] = (1, 2, 3)
    return rgb
