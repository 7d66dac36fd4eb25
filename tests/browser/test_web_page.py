"""The web page in headless Chromium against the real app (fake engine, embedded jobs)."""
from __future__ import annotations

import base64
import io
import json
import re
import zipfile

import httpx
import numpy as np
import pytest
from PIL import Image
from seam.service.outputs.coco import coco_rle_decode

from tests.browser.helpers import API_KEY, canvas_rgb, demo_rgb, label_map, wait_js
from tests.service.fakes import encode, zip_bytes

pytestmark = [pytest.mark.browser, pytest.mark.slow]  # Chromium and a server process: seconds per test

W, H = 192, 128
FAKE_CLASSES = ["red", "green", "blue"]


def _download(page, selector: str) -> tuple[str, bytes]:
    with page.expect_download() as info:
        page.click(selector)
    dl = info.value
    with open(dl.path(), "rb") as f:
        return dl.suggested_filename, f.read()


def _server_overlays(url: str, image: bytes, endpoint: str) -> dict[str, np.ndarray]:
    r = httpx.post(f"{url}{endpoint}", files={"image": ("demo.png", image, "image/png")}, data={"format": "json"},
                   timeout=30)
    r.raise_for_status()
    return {c["name"]: np.asarray(Image.open(io.BytesIO(base64.b64decode(c["overlay_png"]))).convert("RGB"))
            for c in r.json()["classes"]}


def test_image_view(server, page, screenshot, tmp_path):
    image = encode(demo_rgb(W, H))
    path = tmp_path / "demo.png"
    path.write_bytes(image)

    page.goto(server.url + "/")
    page.wait_for_selector("#class-list input[type=checkbox]")
    assert page.locator("#class-list input").count() == 3
    assert page.get_by_role("checkbox", name="red", exact=True).is_visible()  # labelled checkboxes
    screenshot(page, "01-image-empty")

    # upload: CAMs fetched once, heat maps and the mask appear
    page.set_input_files("#image-input", str(path))
    page.wait_for_selector("#image-results:not([hidden])")
    wait_js(page, "seamPage.maskSource() !== null")
    assert page.evaluate("seamPage.classes()") == [0, 1]  # red, green predicted; blue too small
    cams = page.locator("#cam-rows canvas")
    assert cams.count() == 4
    assert page.locator("#legend li").all_inner_texts()[0].startswith("background")
    assert "red" in page.locator("#legend").inner_text() and "green" in page.locator("#legend").inner_text()
    assert page.locator("#status").inner_text().startswith("CAMs of demo.png ready")

    # the heat maps drawn in the browser equal the server's overlays (cam + refined JSON)
    for endpoint, kind in (("/cam", "raw"), ("/cam/refined", "refined")):
        ref = _server_overlays(server.url, image, endpoint)
        for name in ("red", "green"):
            got = canvas_rgb(page, f'#cam-rows canvas[data-class="{name}"][data-kind="{kind}"]')
            assert np.array_equal(got, ref[name]), (kind, name, np.abs(got.astype(int) - ref[name]).max())

    # default threshold: the browser's mask equals the server's PNG, downloaded via the button
    assert page.input_value("#threshold") == "0.26"
    before = label_map(page)
    name, png = _download(page, "#download-png")
    assert name == "demo-pcm-t0.26-mask.png"
    server_label = np.asarray(Image.open(io.BytesIO(png)))
    assert server_label.shape == (H, W)
    np.testing.assert_array_equal(before, server_label)
    mask_before = canvas_rgb(page, "#canvas-mask")
    screenshot(page, "02-image-results")

    # keyboard on the slider: 20 steps right -> 0.46; re-thresholded without a new upload
    requests: list[str] = []
    page.on("request", lambda req: requests.append(req.url))
    page.focus("#threshold")
    for _ in range(20):
        page.keyboard.press("ArrowRight")
    wait_js(page, "seamPage.maskSource() && seamPage.maskSource().threshold === 0.46")
    assert page.locator("#threshold-value").inner_text() == "0.46"
    assert not [u for u in requests if "/cam" in u or "/segment" in u], requests
    after = label_map(page)
    assert (after > 0).sum() < (before > 0).sum()  # a higher threshold: less foreground
    assert not np.array_equal(canvas_rgb(page, "#canvas-mask"), mask_before)
    screenshot(page, "03-image-threshold-0.46")

    # downloads at the new threshold match the browser's mask: PNG and COCO RLE JSON
    name, png = _download(page, "#download-png")
    assert name == "demo-pcm-t0.46-mask.png"
    np.testing.assert_array_equal(after, np.asarray(Image.open(io.BytesIO(png))))
    name, body = _download(page, "#download-json")
    assert name == "demo-pcm-t0.46-coco.json"
    doc = json.loads(body)
    assert doc["threshold"] == 0.46 and (doc["width"], doc["height"]) == (W, H)
    rebuilt = np.zeros((H, W), np.uint8)
    for c in doc["classes"]:
        rebuilt[coco_rle_decode(c["rle"])] = c["label"]
    np.testing.assert_array_equal(after, rebuilt)

    # raw CAMs (method cam) are re-thresholded in the browser too, and match the server
    page.select_option("#mask-method", "cam")
    wait_js(page, "seamPage.maskSource().method === 'cam'")
    r = httpx.post(f"{server.url}/segment", files={"image": ("demo.png", image, "image/png")},
                   data={"method": "cam", "threshold": "0.46", "labels": "red,green"}, timeout=30)
    np.testing.assert_array_equal(label_map(page), np.asarray(Image.open(io.BytesIO(r.content))))

    # drag and drop with a class picked by hand: only that class is computed
    page.check("#class-list input[value=blue]")
    page.evaluate("""(b64) => {
        const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
        const dt = new DataTransfer();
        dt.items.add(new File([bytes], 'dropped.png', {type: 'image/png'}));
        document.querySelector('#drop-zone').dispatchEvent(new DragEvent('drop', {dataTransfer: dt, bubbles: true}));
    }""", base64.b64encode(image).decode())
    wait_js(page, "JSON.stringify(seamPage.classes()) === '[2]'")
    assert page.locator("#cam-rows .cam-row").count() == 1
    assert "dropped.png" in page.locator("#status").inner_text()
    screenshot(page, "04-image-dropped-blue")


def test_jobs_view(server, page, screenshot, tmp_path):
    archive = tmp_path / "three.zip"
    archive.write_bytes(zip_bytes({
        "a.png": encode(demo_rgb(W, H, 0)),
        "b.png": encode(demo_rgb(W, H, 1)),
        "broken.png": encode(demo_rgb(W, H, 2, fail=True)),  # the fake engine fails on it
    }))
    page.goto(server.url + "/")
    page.wait_for_selector("#job-method option[value=pcm]", state="attached")
    page.get_by_role("link", name="Batch jobs").focus()  # keyboard navigation between views
    page.keyboard.press("Enter")
    wait_js(page, "document.activeElement.id === 'jobs-title'")
    assert page.locator("#view-jobs").is_visible() and not page.locator("#view-image").is_visible()
    assert page.locator('nav a[data-view="jobs"]').get_attribute("aria-current") == "page"

    page.set_input_files("#job-archive", str(archive))
    page.select_option("#job-method", "pcm")
    page.fill("#job-threshold", "0.3")
    page.click("#job-submit")
    page.wait_for_selector("#jobs-body tr")
    row = page.locator("#jobs-body tr").first
    job_id = row.get_attribute("data-job")
    assert page.locator("#status").inner_text().startswith(f"Job {job_id[:8]} submitted: 3 images")
    row.locator(".state.running, .state.succeeded").wait_for()

    row.locator(".state.succeeded").wait_for(timeout=20_000)
    row.locator("details summary").wait_for()
    assert row.locator("progress").get_attribute("value") == "3"
    assert "2 done · 1 failed" in row.locator(".counts").inner_text()
    row.locator("details summary").click()
    assert "broken" in row.locator(".errors-list").inner_text()
    assert "trigger pixel" in row.locator(".errors-list").inner_text()
    assert f"Job {job_id[:8]} succeeded" in page.locator("#status").inner_text()
    screenshot(page, "05-job-finished")

    name, data = _download(page, f'tr[data-job="{job_id}"] [data-action="download"]')
    assert name == f"seam-{job_id}.zip"
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        names = set(zf.namelist())
    assert {"overlay/a.png", "overlay/b.png", "png/a.png", "png/b.png", "coco.json", "errors.json"} <= names

    page.click(f'tr[data-job="{job_id}"] [data-action="gallery"]')
    page.wait_for_selector("#gallery-grid img")
    imgs = page.locator("#gallery-grid img")
    assert imgs.count() == 2
    assert sorted(imgs.evaluate_all("els => els.map(e => e.alt)")) == [
        "Segmentation overlay of a", "Segmentation overlay of b"]
    wait_js(page, "[...document.querySelectorAll('#gallery-grid img')].every(i => i.complete && i.naturalWidth === "
                  "192)")
    assert page.evaluate("document.activeElement.id") == "gallery-title"
    screenshot(page, "06-job-gallery")

    # cancel a longer job while it runs
    many = tmp_path / "many.zip"
    many.write_bytes(zip_bytes({f"img{i:02d}.png": encode(demo_rgb(W, H, i % 3)) for i in range(40)}))
    page.set_input_files("#job-archive", str(many))
    page.click("#job-submit")
    wait_js(page, f"document.querySelector('#jobs-body tr').dataset.job !== '{job_id}'")
    second = page.locator("#jobs-body tr").first
    wait_js(page, "Number(document.querySelector('#jobs-body tr progress').value) >= 2")  # mid-run
    screenshot(page, "07-job-running")
    second.locator('[data-action="cancel"]').click()
    second.locator(".state.cancelled").wait_for()
    done = int(second.locator("progress").get_attribute("value"))
    assert 2 <= done < 40
    second.locator('[data-action="gallery"]').wait_for()  # partial results stay available
    screenshot(page, "08-job-cancelled")


def test_api_key(keyed_server, page, screenshot):
    page.goto(keyed_server.url + "/")
    page.wait_for_selector("#error:not([hidden])")
    assert "Enter the API key" in page.locator("#error").inner_text()
    assert page.locator("#apikey-box").get_attribute("open") is not None
    page.fill("#apikey-input", API_KEY)
    page.click("#apikey-form button[type=submit]")
    page.wait_for_selector("#class-list input[type=checkbox]")
    assert page.locator("#apikey-state").inner_text() == "(set)"
    assert page.evaluate("localStorage.getItem('seam.apiKey')") == API_KEY
    screenshot(page, "09-api-key")
    page.reload()  # the key survives a reload and is sent again
    page.wait_for_selector("#class-list input[type=checkbox]")
    assert page.locator("#error").is_hidden()


def test_server_side_method(server, page, tmp_path):
    """Methods that are not a threshold of the CAMs (rw, deeplab) take the mask from
    POST /segment?format=json and paint its COCO RLEs. The fake engine has no rw: the
    page is told it has, and its rw requests are answered by the server's pcm."""
    image = encode(demo_rgb(W, H))
    path = tmp_path / "demo.png"
    path.write_bytes(image)
    seen: list[bytes] = []

    def models(route) -> None:
        resp = route.fetch()
        body = resp.json()
        body["methods"] = [*body["methods"], "rw"]
        route.fulfill(response=resp, json=body)

    def segment(route) -> None:
        # Chromium hands interceptors no file blobs: answer from the fields, with the test's image
        data = route.request.post_data_buffer or b""
        seen.append(data)
        fields = dict(re.findall(rb'name="(\w+)"\r\n\r\n([^\r]*)\r\n', data))
        r = httpx.post(f"{server.url}/segment", files={"image": ("demo.png", image, "image/png")}, timeout=30,
                       data={"method": "pcm", "threshold": fields[b"threshold"].decode(),
                             "labels": fields[b"labels"].decode(), "format": fields[b"format"].decode()})
        route.fulfill(status=r.status_code, body=r.content, content_type=r.headers["content-type"])

    page.route("**/models", models)
    page.route("**/segment", segment)
    page.goto(server.url + "/")
    page.wait_for_selector("#mask-method option[value=rw]", state="attached")
    page.set_input_files("#image-input", str(path))
    wait_js(page, "seamPage.maskSource() !== null")
    client_side = label_map(page)
    page.select_option("#mask-method", "rw")
    wait_js(page, "seamPage.maskSource().method === 'rw'")
    assert seen and b'name="method"\r\n\r\nrw\r\n' in seen[-1] and b"name=\"format\"\r\n\r\njson" in seen[-1]
    np.testing.assert_array_equal(label_map(page), client_side)  # RLEs painted = the pcm mask
    assert "computed by the server" in page.locator("#mask-method-note").inner_text()
    # the slider asks the server again (debounced) for such methods
    page.focus("#threshold")
    for _ in range(10):
        page.keyboard.press("ArrowRight")
    wait_js(page, "seamPage.maskSource().method === 'rw' && seamPage.maskSource().threshold === 0.36")
    assert b'name="threshold"\r\n\r\n0.36\r\n' in seen[-1]
    assert len(seen) <= 3  # debounced: not one request per key press


def test_lists_come_from_the_server(server, page):
    """The page offers what GET /models and GET /outputs list, nothing of its own: a method and
    an output kind the page has never heard of show up (with the server's texts), the output's
    required option is asked for, and the model's default threshold sets the slider."""
    def models(route) -> None:
        body = route.fetch().json()
        route.fulfill(json={**body, "methods": [*body["methods"], "newmethod"], "default_threshold": 0.3})

    def outputs(route) -> None:
        toy = {"kind": "toy", "extension": ".toy", "media_type": "application/octet-stream", "label": "Toy file",
               "description": "a kind the page does not know", "merged": [], "requires": ["image_url_prefix"],
               "preselected": True}
        route.fulfill(json=[*route.fetch().json(), toy])

    page.route("**/models", models)
    page.route("**/outputs", outputs)
    page.goto(server.url + "/#jobs")
    page.wait_for_selector('#job-outputs input[value="toy"]')
    listed = httpx.get(f"{server.url}/outputs").json()
    boxes = page.locator('#job-form input[name="outputs"]')
    assert boxes.evaluate_all("els => els.map(e => e.value)") == [k["kind"] for k in listed] + ["toy"]
    assert boxes.evaluate_all("els => els.filter(e => e.checked).map(e => e.value)") == [
        k["kind"] for k in listed if k["preselected"]] + ["toy"]
    toy = page.get_by_role("checkbox", name="Toy file")
    assert toy.is_checked() and toy.locator("xpath=..").get_attribute("title") == "a kind the page does not know"
    assert page.locator("#job-prefix-field").is_visible()  # the toy kind requires image_url_prefix
    page.wait_for_selector("#job-method option[value=newmethod]", state="attached")
    page.set_input_files("#job-archive", files=[{"name": "a.zip", "mimeType": "application/zip",
                                                 "buffer": zip_bytes({"a.png": encode(demo_rgb(W, H))})}])
    page.click("#job-submit")
    page.wait_for_selector("#error:not([hidden])")
    assert "Toy file output needs an image URL prefix" in page.locator("#error").inner_text()
    toy.uncheck()
    assert page.locator("#job-prefix-field").is_hidden()

    page.goto(server.url + "/#image")
    page.wait_for_selector("#mask-method option[value=newmethod]", state="attached")
    assert page.input_value("#threshold") == "0.3" and page.locator("#threshold-value").inner_text() == "0.30"
    assert page.input_value("#mask-method") == "pcm"  # re-thresholded in the browser: preferred
    names = page.locator("#mask-method option").evaluate_all("els => els.map(e => e.textContent)")
    assert names[-1] == "newmethod" and "pcm (PCM-refined CAMs)" in names  # no description: the name alone
