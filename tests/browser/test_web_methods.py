"""The page's method lists are GET /models' `method_details`: the image view offers the methods
that may run synchronously, the job form those that may run in jobs, each named by the server's
label; the ones the server says are a plain threshold of CAMs the page holds are recomputed in the
browser as the slider moves (no request), the others asked of POST /segment. Toy methods
registered in the methods table of a server in this process (and nowhere else) reach the page."""
from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image
from seam.service.core.config import Settings
from seam.service.engine import methods
from seam.service.engine.methods import Method
from seam.service.engine.runners.thresholded import thresholded
from seam.service.main import create_app

from tests.browser.helpers import demo_rgb, label_map, wait_js
from tests.service.fakes import FakeEngine, encode
from tests.support import serve_in_thread

pytestmark = [pytest.mark.browser, pytest.mark.slow]  # Chromium and a server: seconds per test

W, H = 192, 128


def _models(url: str) -> dict:
    r = httpx.get(f"{url}/models", timeout=30)
    r.raise_for_status()
    return r.json()


def _options(page, selector: str) -> list[tuple[str, str]]:
    got = page.locator(f"{selector} option").evaluate_all("els => els.map(e => [e.value, e.textContent])")
    return [tuple(x) for x in got]


def _expected(details: list[dict], where: str) -> list[tuple[str, str]]:
    return [(m["name"], f"{m['name']} ({m['label']})") for m in details if where in m["where"]]


def _upload(page, tmp_path: Path) -> bytes:
    image = encode(demo_rgb(W, H))
    path = tmp_path / "demo.png"
    path.write_bytes(image)
    page.set_input_files("#image-input", str(path))
    page.wait_for_selector("#image-results:not([hidden])")
    wait_js(page, "seamPage.maskSource() !== null")
    return image


def _server_label(url: str, image: bytes, method: str, threshold: float) -> np.ndarray:
    r = httpx.post(f"{url}/segment", files={"image": ("demo.png", image, "image/png")},
                   data={"method": method, "threshold": str(threshold), "labels": "red,green"}, timeout=30)
    r.raise_for_status()
    return np.asarray(Image.open(io.BytesIO(r.content)))


def test_the_lists_are_the_method_details(server, page):
    """The fake engine's server: the page's method lists equal what GET /models says."""
    body = _models(server.url)
    details = body["method_details"]
    assert {m["name"] for m in details} == set(body["methods"])  # every built-in method has its details
    page.goto(server.url + "/")
    page.wait_for_selector("#mask-method option", state="attached")
    assert _options(page, "#mask-method") == _expected(details, "sync")
    jobs = _expected(details, "jobs")
    assert _options(page, "#job-method") == [("", f"default ({jobs[0][0]})"), *jobs]
    # the first method the page recomputes itself is chosen: no request as the slider moves
    first_plain = next(m["name"] for m in details if m["plain_threshold"] and "sync" in m["where"])
    assert page.input_value("#mask-method") == first_plain


@pytest.fixture(scope="module")
def toy_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The app (fake engine) served in this process with two toy methods registered in the table:
    `toyraw`, a plain threshold of the raw CAMs that may only run synchronously, and `toysrv`,
    the refined CAMs thresholded by the server (not declared a plain threshold). The table is
    restored afterwards."""
    saved = dict(methods.METHODS)
    tmp = tmp_path_factory.mktemp("toy-web")
    try:
        methods.register(Method("toyraw", ("seam",), thresholded(refined=False), "Toy raw threshold",
                                "a toy: the raw CAMs above the threshold", cams="raw", plain_threshold=True,
                                where=frozenset({"sync"})), before="pcm")
        methods.register(Method("toysrv", ("seam",), thresholded(refined=True), "Toy on the server",
                                "a toy the server computes"))
        settings = Settings(engine="fake", data_dir=tmp / "data", models_dir=tmp / "models", warmup=True)
        with serve_in_thread(create_app(settings, engine=FakeEngine())) as url:
            yield url
    finally:
        methods.METHODS.clear()
        methods.METHODS.update(saved)


def test_toy_methods_reach_the_page(toy_server, page, tmp_path):
    details = _models(toy_server)["method_details"]
    assert [m["name"] for m in details if m["name"].startswith("toy")] == ["toyraw", "toysrv"]
    page.goto(toy_server + "/")
    page.wait_for_selector("#mask-method option[value=toyraw]", state="attached")
    assert _options(page, "#mask-method") == _expected(details, "sync")
    # where: toyraw may not run in jobs, toysrv may
    job_methods = [v for v, _ in _options(page, "#job-method")]
    assert "toysrv" in job_methods and "toyraw" not in job_methods
    # registered before pcm and a plain threshold: the page's first choice
    assert page.input_value("#mask-method") == "toyraw"

    image = _upload(page, tmp_path)
    requests: list[str] = []
    page.on("request", lambda req: requests.append(req.url))
    # a plain threshold: recomputed in the browser as the slider moves, equal to the server's mask
    page.focus("#threshold")
    for _ in range(10):
        page.keyboard.press("ArrowRight")
    wait_js(page, "seamPage.maskSource().method === 'toyraw' && seamPage.maskSource().threshold === 0.36")
    assert not [u for u in requests if "/segment" in u or "/cam" in u], requests
    assert "computed in the browser from the raw CAMs" in page.locator("#mask-method-note").inner_text()
    np.testing.assert_array_equal(label_map(page), _server_label(toy_server, image, "toyraw", 0.36))

    # not a plain threshold: asked of POST /segment with its name
    page.select_option("#mask-method", "toysrv")
    wait_js(page, "seamPage.maskSource().method === 'toysrv'")
    assert any("/segment" in u for u in requests), requests
    assert "computed by the server" in page.locator("#mask-method-note").inner_text()
    np.testing.assert_array_equal(label_map(page), _server_label(toy_server, image, "toysrv", 0.36))
