"""The Corrections view against a real server (uvicorn subprocess, fake engine): a CVAT task's
"Segmentation mask 1.1" export uploaded to POST /corrections makes a project; the page lists it
with the number of corrections GET /corrections counts, "Fit now" starts a fit (POST
/corrections/cvat/{task}/fit) and the page shows its training's state as GET /trainings/{id} does."""
from __future__ import annotations

import io
import zipfile
from collections.abc import Iterator

import httpx
import numpy as np
import pytest
from PIL import Image

from testkit.processes import stop_process
from tests.browser.helpers import Server, start_web_server, wait_js
from tests.service.corrections.helpers import png

pytestmark = [pytest.mark.browser, pytest.mark.slow]  # Chromium and a server: seconds

TASK = "42"
H, W = 20, 30
LABELMAP = "# label:color_rgb:parts:actions\nbackground:0,0,0::\nred:128,0,0::\nblue:0,0,128::\n"
COLOURS = {1: (128, 0, 0), 3: (0, 0, 128)}  # the fake engine's red and blue, as labelmap.txt colours them


def export(frames: int) -> bytes:
    """A CVAT "Segmentation mask 1.1" export (with images) of `frames` frames, each a red or a blue block
    (as tests/service/corrections/test_cvat_corrections.py builds them)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("labelmap.txt", LABELMAP)
        z.writestr("ImageSets/Segmentation/default.txt", "".join(f"f{i}\n" for i in range(frames)))
        for i in range(frames):
            rgb = np.zeros((H, W, 3), np.uint8)
            rgb[2:9, 4:15] = COLOURS[1 if i % 2 else 3]
            mask = io.BytesIO()
            Image.fromarray(rgb).save(mask, format="PNG")
            z.writestr(f"SegmentationClass/f{i}.png", mask.getvalue())
            z.writestr(f"JPEGImages/f{i}.png", png(H, W, seed=i))
    return buf.getvalue()


@pytest.fixture(scope="module")
def corrections_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = start_web_server(tmp_path_factory.mktemp("web-corrections"))
    yield srv
    stop_process(srv.proc)


def _upload(url: str, frames: int, task: str = TASK) -> dict:
    r = httpx.post(f"{url}/corrections", data={"task": task}, timeout=30,
                   files={"archive": ("masks.zip", export(frames), "application/zip")})
    assert r.status_code == 200, r.text
    return r.json()


def _project(url: str, task: str = TASK) -> dict:
    r = httpx.get(f"{url}/corrections", timeout=30)
    r.raise_for_status()
    (p,) = [p for p in r.json()["projects"] if (p["source"], p["project"]) == ("cvat", task)]
    return p


def test_corrections_view_counts_and_fits(corrections_server, page, screenshot):
    url = corrections_server.url
    assert _upload(url, 3)["corrections"] == 3
    page.goto(url + "/#corrections")
    row = page.locator(f'#corrections-body tr[data-project="cvat/{TASK}"]')
    row.wait_for()
    assert page.locator("#corrections-empty").is_hidden()
    cell = row.locator('[data-field="corrections"]')
    assert cell.inner_text().split("\n")[0] == str(_project(url)["corrections"]) == "3"
    assert row.locator('[data-field="source"]').inner_text() == "CVAT"
    assert row.locator('[data-field="fit"]').inner_text() == "no fit yet"

    # another frame: Refresh shows the API's new count
    _upload(url, 4)
    page.click("#corrections-refresh")
    wait_js(page, f"document.querySelector('tr[data-project=\"cvat/{TASK}\"] [data-field=corrections]')"
                  ".firstChild.textContent === '4'")
    assert _project(url)["corrections"] == 4

    # Fit now: the fit's training, followed until it ends, shown with the state the API gives
    row.locator('button[data-action="fit"]').click()
    fits = []
    for _ in range(100):
        fits = _project(url)["fits"]
        if fits:
            break
        page.wait_for_timeout(100)
    assert len(fits) == 1, fits
    training = fits[0]["training"]
    fit_cell = row.locator('[data-field="fit"]')
    shown = f"document.querySelector('tr[data-project=\"cvat/{TASK}\"] [data-field=fit]')"
    wait_js(page, f"{shown}.textContent.includes('{training[:8]}')")
    wait_js(page, f"!['queued', 'running', 'unknown'].includes({shown}.dataset.state)", timeout=120)
    t = httpx.get(f"{url}/trainings/{training}", timeout=30).json()
    assert fit_cell.get_attribute("data-state") == t["state"]
    assert t["state"] in fit_cell.inner_text()
    if t.get("error"):
        assert t["error"] in fit_cell.inner_text()
    if t.get("model"):
        assert t["model"] in fit_cell.inner_text()
    screenshot(page, "11-corrections")


def test_a_fit_shows_its_version_and_held_out_evaluation(corrections_server, page):
    """A fit that published a version: its NAME:VERSION and the held-out mIoU, new vs promoted, as the
    Train view words them. (The fake engine has no checkpoint, so its fits fail, as the test above
    shows; the training's answer is rewritten in the browser to the fields a succeeded one has.)"""
    url = corrections_server.url
    _upload(url, 2, task="43")
    r = httpx.post(f"{url}/corrections/cvat/43/fit", timeout=60)
    assert r.status_code == 202, r.text
    training = r.json()["training"]
    succeeded = {"id": training, "state": "succeeded", "stage": "deeplab", "model": "fake:2", "promoted": True,
                 "evaluation": {"new": 61.5, "promoted": 55.5, "promoted_ref": "fake:1", "note": None}}
    page.route(f"**/trainings/{training}", lambda route: route.fulfill(json=succeeded))
    page.goto(url + "/#corrections")
    cell = page.locator('tr[data-project="cvat/43"] [data-field="fit"]')
    cell.wait_for()
    wait_js(page, "document.querySelector('tr[data-project=\"cvat/43\"] [data-field=fit]').dataset.state"
                  " === 'succeeded'")
    text = cell.inner_text()
    assert "fake:2 (promoted)" in text
    assert "held-out mIoU: new 61.5 %, fake:1 55.5 %" in text
    assert page.locator('tr[data-project="cvat/43"] [data-field="corrections"]').inner_text().startswith(
        str(_project(url, "43")["corrections"]))
