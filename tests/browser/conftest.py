"""Browser tests of the web page: the real app under uvicorn (embedded mode, the fake
engine via SEAM_ENGINE=fake) in a subprocess on a free loopback port, driven by
headless Chromium through Playwright's sync API.

Chromium: $SEAM_CHROMIUM, else /usr/bin/chromium (Debian's `chromium` package), else
Playwright's own download if one is installed; without any, the tests are skipped
with the reason. Screenshots land in artifacts/screenshots/ (gitignored).
"""
from __future__ import annotations

import io
import os
import shutil
import socket
import subprocess
import sys
import time
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[2]
SCREENSHOTS = REPO / "artifacts" / "screenshots"
API_KEY = "browser-test-key-0123456789"
FAKE_DELAY_MS = 150  # per fake-engine call: job progress is visible while polling


def chromium_path() -> str | None:
    for cand in (os.environ.get("SEAM_CHROMIUM"), "/usr/bin/chromium", shutil.which("chromium"),
                 shutil.which("chromium-browser"), shutil.which("google-chrome")):
        if cand and Path(cand).is_file():
            return cand
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, url: str, proc: subprocess.Popen, log: Path) -> None:
        self.url, self.proc, self.log = url, proc, log


def _start_server(tmp: Path, **env_extra: str) -> Server:
    """uvicorn --factory service.main:create_app, ready (models warmed) when this returns."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEAM_")}
    env.update(SEAM_ENGINE="fake", SEAM_DATA_DIR=str(tmp / "data"), SEAM_MODELS_DIR=str(tmp / "models"),
               SEAM_FAKE_DELAY_MS=str(FAKE_DELAY_MS), SEAM_CHUNK_SIZE="1", PYTHONUNBUFFERED="1", **env_extra)
    log = tmp / "uvicorn.log"
    last = ""
    for _attempt in range(3):  # the free port may be taken between probing and binding
        port = _free_port()
        url = f"http://127.0.0.1:{port}"
        with log.open("ab") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "uvicorn", "--factory", "service.main:create_app", "--host", "127.0.0.1",
                 "--port", str(port), "--log-level", "warning", "--no-access-log"],
                cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                    return Server(url, proc, log)
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        _stop(proc)
        last = log.read_text(errors="replace")[-3000:]
    raise RuntimeError(f"the service did not become ready; log:\n{last}")


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = _start_server(tmp_path_factory.mktemp("web"))
    yield srv
    _stop(srv.proc)


@pytest.fixture(scope="module")
def keyed_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = _start_server(tmp_path_factory.mktemp("web-key"), SEAM_API_KEYS=API_KEY)
    yield srv
    _stop(srv.proc)


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    """Module scope on purpose: Playwright's sync API keeps an asyncio loop running in
    the main thread while it is open, which would break later tests calling asyncio.run."""
    exe = chromium_path()
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("playwright is not installed (pip install -e '.[dev]')")
    with sync_playwright() as pw:
        if exe is None:
            try:
                b = pw.chromium.launch()
            except Exception as exc:  # noqa: BLE001
                pytest.skip(f"no Chromium: install Debian's chromium (/usr/bin/chromium) or set SEAM_CHROMIUM ({exc})")
        else:
            b = pw.chromium.launch(executable_path=exe, args=["--no-sandbox", "--disable-dev-shm-usage"])
        yield b
        b.close()


@pytest.fixture
def page(browser) -> Iterator[object]:
    """A fresh context (own localStorage) with a desktop viewport; fails the test on
    page script errors or console errors other than expected HTTP failures."""
    ctx = browser.new_context(viewport={"width": 1280, "height": 900}, accept_downloads=True)
    ctx.set_default_timeout(15_000)
    pg = ctx.new_page()
    problems: list[str] = []
    pg.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))

    def on_console(msg) -> None:
        if msg.type == "error" and "Failed to load resource" not in msg.text:
            problems.append(f"console error: {msg.text}")

    pg.on("console", on_console)
    pg.problems = problems  # type: ignore[attr-defined]
    yield pg
    ctx.close()
    assert not problems, problems


@pytest.fixture(scope="session")
def screenshot() -> Callable[[object, str], Path]:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)

    def shot(pg, name: str) -> Path:
        path = SCREENSHOTS / f"{name}.png"
        pg.screenshot(path=str(path), full_page=True)
        return path

    return shot


# --- test images ---------------------------------------------------------------------
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


def png_bytes(rgb: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG")
    return buf.getvalue()


def zip_of(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return buf.getvalue()
