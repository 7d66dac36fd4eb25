"""Browser tests of the web page: the real app under uvicorn (embedded mode, the fake
engine via SEAM_ENGINE=fake) in a subprocess on a free loopback port, driven by
headless Chromium through Playwright's sync API.

Chromium: $SEAM_CHROMIUM, else /usr/bin/chromium (Debian's `chromium` package), else
Playwright's own download if one is installed; without any, the tests are skipped
with the reason. Screenshots land in artifacts/screenshots/ (gitignored).
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from testkit.processes import stop_process
from tests.browser.helpers import API_KEY, Server, chromium_path, start_web_server
from tests.support import REPO

SCREENSHOTS = REPO / "artifacts" / "screenshots"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = start_web_server(tmp_path_factory.mktemp("web"))
    yield srv
    stop_process(srv.proc)


@pytest.fixture(scope="module")
def keyed_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = start_web_server(tmp_path_factory.mktemp("web-key"), SEAM_API_KEYS=API_KEY)
    yield srv
    stop_process(srv.proc)


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
