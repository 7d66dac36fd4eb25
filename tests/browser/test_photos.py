"""The web page on ordinary photos with the bundled demo model: landscape and portrait,
one class and several, 120x90 up to 4000x3000. What the page DRAWS is read back from its
canvases: heat maps hot on the objects, masks that match the server's and the truth, mask
overlays pixel for pixel the server's own rule (tint + outline), visible over a subject of
the mask's own colour. Also: an error clears the previous results, the page shows what the
model knows, a 4000x3000 photo's time against the server's, and the jobs form's outputs."""
from __future__ import annotations

import functools
import io
import statistics
import time
import zipfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest
from PIL import Image
from scipy import ndimage
from seam.service.outputs.kinds import OUTPUT_KINDS

from seam.common.encoders import mask_edges, mask_overlay
from testkit.processes import stop_process
from tests.browser.helpers import Server, canvas_rgb, label_map, start_demo_model_server, wait_js
from tests.photos import DEMO_CLASSES, Shape, demo_photo
from tests.service.fakes import encode, zip_bytes

pytestmark = [pytest.mark.browser, pytest.mark.slow]  # Chromium, a server process and the demo model

DISPLAY_SIDE = 1024  # service/web/js/image-view.js


@pytest.fixture(scope="module")
def demo_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = start_demo_model_server(tmp_path_factory.mktemp("web-demo"))
    yield srv
    stop_process(srv.proc)


@functools.lru_cache(maxsize=4)
def _photo(w: int, h: int, shapes: tuple[Shape, ...], seed: int) -> tuple[bytes, np.ndarray]:
    """JPEG bytes and truth of a demo photo: a 4000x3000 one takes seconds to make, so once."""
    rgb, truth = demo_photo(w, h, shapes, seed=seed)
    return encode(rgb, "JPEG", quality=92), truth


BIG = (4000, 3000, (Shape("disc", 0.25, 0.4, 0.3), Shape("square", 0.72, 0.55, 0.28)), 7)


def _display(w: int, h: int) -> tuple[int, int]:
    if max(w, h) <= DISPLAY_SIDE:
        return w, h
    s = DISPLAY_SIDE / max(w, h)
    return max(1, round(w * s)), max(1, round(h * s))


def _nearest(a: np.ndarray, w: int, h: int) -> np.ndarray:
    """(H, W) -> (h, w) by the page's nearest-pixel rule (resizeLabel)."""
    ys = np.minimum(((np.arange(h) + 0.5) * a.shape[0] / h).astype(int), a.shape[0] - 1)
    xs = np.minimum(((np.arange(w) + 0.5) * a.shape[1] / w).astype(int), a.shape[1] - 1)
    return a[ys][:, xs]


def _jet_value(heat: np.ndarray, image: np.ndarray) -> np.ndarray:
    """Roughly the CAM value a heat-map pixel shows: the jet colour is 2 * overlay - image
    (a 50 % blend), and jet peaks red at 3/4, green at 1/2, blue at 1/4."""
    jet = np.clip(2 * heat - image, 0, 255).astype(np.float64)
    return (0.75 * jet[..., 0] + 0.5 * jet[..., 1] + 0.25 * jet[..., 2]) / (jet.sum(axis=-1) + 1e-6)


def _upload(page, server: Server, path, labels: list[str] = ()) -> None:
    page.goto(server.url + "/")
    page.wait_for_selector("#class-list input[type=checkbox]")
    for name in labels:
        page.check(f"#class-list input[value={name}]")
    page.set_input_files("#image-input", str(path))
    wait_js(page, "seamPage.maskSource() !== null || !document.querySelector('#error').hidden", timeout=60)
    assert page.locator("#error").is_hidden(), page.locator("#error").inner_text()


# name, width, height, shapes, ticked classes (empty: the model predicts them)
CASES = [
    ("landscape-one-451x300", 451, 300, [Shape("disc", 0.35, 0.5, 0.35)], []),
    ("portrait-one-300x451", 300, 451, [Shape("disc", 0.5, 0.4, 0.35)], []),
    ("tiny-several-120x90", 120, 90, [Shape("disc", 0.27, 0.5, 0.42), Shape("square", 0.73, 0.5, 0.38)],
     ["disc", "square"]),
    ("landscape-several-600x400", 600, 400, [Shape("square", 0.28, 0.5, 0.33), Shape("disc", 0.72, 0.45, 0.3)], []),
    ("portrait-one-3000x4000", 3000, 4000, [Shape("disc", 0.5, 0.4, 0.35)], []),
    ("landscape-several-4000x3000", *BIG[:3], []),
]


@pytest.mark.parametrize("name,w,h,shapes,ticked", CASES, ids=[c[0] for c in CASES])
def test_photo_results_are_drawn(demo_server, page, screenshot, tmp_path, name, w, h, shapes, ticked):
    data, truth = _photo(w, h, tuple(shapes), BIG[3] if (w, h, tuple(shapes)) == BIG[:3] else len(name))
    path = tmp_path / f"{name}.jpg"
    path.write_bytes(data)
    _upload(page, demo_server, path, ticked)

    expect = sorted({DEMO_CLASSES.index(s.name) for s in shapes})
    assert page.evaluate("seamPage.classes()") == expect
    assert page.evaluate("seamPage.imageSize()") == {"width": w, "height": h}
    dw, dh = _display(w, h)
    assert page.evaluate("seamPage.size()") == {"width": dw, "height": dh}
    assert page.locator("#status").inner_text().startswith(f"CAMs of {name}.jpg ready")

    image = canvas_rgb(page, "#canvas-image").astype(np.int32)
    assert image.shape == (dh, dw, 3)
    truth_d = _nearest(truth, dw, dh)
    label = label_map(page)

    for c in expect:
        cls = DEMO_CLASSES[c]
        inside = truth_d == c + 1
        outside = truth_d == 0
        for kind in ("raw", "refined"):
            heat = canvas_rgb(page, f'#cam-rows canvas[data-class="{cls}"][data-kind="{kind}"]').astype(np.int32)
            assert heat.shape == (dh, dw, 3)
            hot = _jet_value(heat, image)
            assert hot[inside].mean() > hot[outside].mean() + 0.05, (cls, kind, hot[inside].mean(), hot[outside].mean())
        # the mask covers the object and little else
        got = label == c + 1
        iou = (got & inside).sum() / max((got | inside).sum(), 1)
        assert iou > 0.5, (cls, iou)

    # the page's mask is the server's (the PNG the download button fetches), at the drawn size
    r = httpx.post(f"{demo_server.url}/segment", files={"image": ("p.jpg", path.read_bytes(), "image/jpeg")},
                   data={"method": "pcm", "threshold": "0.26", "labels": ",".join(DEMO_CLASSES[c] for c in expect)},
                   timeout=120)
    server = _nearest(np.asarray(Image.open(io.BytesIO(r.content))), dw, dh)
    agree = (server == label).mean()
    assert agree > (0.995 if (dw, dh) == (w, h) else 0.97), agree

    # the overlay drawn is exactly the server's overlay rule on the drawn image and mask
    drawn = canvas_rgb(page, "#canvas-mask")
    np.testing.assert_array_equal(drawn, mask_overlay(image.astype(np.uint8), label))
    edges = mask_edges(label)
    assert edges.any()
    if 0 in expect:  # the disc's mask colour (VOC 1, dark red) over a red disc: still plainly visible
        disc = (label == 1) & (truth_d == 1) & ~edges
        assert np.abs(drawn[disc].astype(int) - image[disc]).sum(axis=1).mean() > 40
        # an outline runs along the (dark) red subject, drawn white wherever the photo is dark
        near = edges & ndimage.binary_dilation(truth_d == 1, iterations=3)
        dark = (image @ np.array([299, 587, 114])) // 1000 < 128
        assert near.any() and (near & dark).any()
        assert (drawn[near & dark] == 255).all()
    screenshot(page, f"10-photo-{name}")


def test_error_clears_the_previous_results(demo_server, page, tmp_path):
    rgb, _ = demo_photo(451, 300, [Shape("disc", 0.35, 0.5, 0.35)], seed=3)
    good = tmp_path / "cat.jpg"
    good.write_bytes(encode(rgb, "JPEG"))
    _upload(page, demo_server, good)
    assert page.locator("#image-results").is_visible()
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 64)  # sniffed as PNG, undecodable: the server says 4xx
    page.set_input_files("#image-input", str(bad))
    page.wait_for_selector("#error:not([hidden])")
    assert page.locator("#image-results").is_hidden()
    assert page.evaluate("seamPage.labelMap()") is None and page.evaluate("seamPage.classes()") is None
    assert page.evaluate("document.querySelector('#canvas-mask').width") == 0


def test_page_says_what_the_model_knows(demo_server, page):
    page.goto(demo_server.url + "/")
    page.wait_for_selector("#class-list input[type=checkbox]")
    text = page.locator("#model-description").inner_text()
    assert "synthetic shapes demo: disc, square, triangle, ring, cross" in text
    assert "knows only these classes" in text


def test_4000x3000_photo_time_against_the_server(demo_server, page, tmp_path, record_property):
    """The page's time from choosing the photo to its heat maps and mask drawn, against the
    server's time for the same two requests sent by a plain client (the page sends them in
    parallel, so does this); printed for the record, asserted within 2x."""
    data, _ = _photo(*BIG)
    path = tmp_path / "big.jpg"
    path.write_bytes(data)

    def pair(fields: dict) -> tuple[float, int]:
        def one(endpoint: str) -> int:
            r = httpx.post(f"{demo_server.url}{endpoint}", files={"image": ("big.jpg", data, "image/jpeg")},
                           data=fields, timeout=120)
            r.raise_for_status()
            return len(r.content)
        t0 = time.perf_counter()
        with ThreadPoolExecutor(2) as ex:
            sizes = list(ex.map(one, ["/cam", "/cam/refined"]))
        return (time.perf_counter() - t0) * 1000, sum(sizes)

    pair({"format": "npz", "size": "working"})  # warm-up
    server_ms = statistics.median(pair({"format": "npz", "size": "working"})[0] for _ in range(3))
    full_ms, full_bytes = pair({"format": "npz"})  # what the page used to fetch

    page_ms = []
    for _ in range(2):
        _upload(page, demo_server, path)
        page_ms.append(page.evaluate("seamPage.timing()")["totalMs"])
    timing = page.evaluate("seamPage.timing()")
    record_property("server_ms", round(server_ms))
    record_property("page_ms", page_ms)
    print(f"\n4000x3000 JPEG ({len(data) / 1e6:.1f} MB): server (2 parallel /cam requests, size=working) "
          f"{server_ms:.0f} ms; page {page_ms} ms (npz {timing['bytes'] / 1e3:.0f} kB); "
          f"full-resolution float32 pair {full_ms:.0f} ms, {full_bytes / 1e6:.1f} MB")
    assert min(page_ms) <= 2 * server_ms, (page_ms, server_ms)


def test_jobs_form_offers_every_output_kind(demo_server, page, tmp_path):
    page.goto(demo_server.url + "/#jobs")
    page.wait_for_selector("#job-method option[value=pcm]", state="attached")
    offered = page.locator('#job-form input[name="outputs"]').evaluate_all("els => els.map(e => e.value)")
    assert sorted(offered) == sorted(OUTPUT_KINDS)
    assert page.locator("#job-prefix-field").is_hidden()

    photos = {f"p{i}.jpg": encode(demo_photo(320, 240, [Shape("disc", 0.4, 0.5, 0.35)], seed=i)[0], "JPEG")
              for i in range(2)}
    archive = tmp_path / "photos.zip"
    archive.write_bytes(zip_bytes(photos))
    page.set_input_files("#job-archive", str(archive))
    for kind in offered:
        page.check(f'#job-form input[name="outputs"][value="{kind}"]')
    assert page.locator("#job-prefix-field").is_visible()
    page.click("#job-submit")  # no prefix: the page says what Label Studio needs
    page.wait_for_selector("#error:not([hidden])")
    assert "image URL prefix" in page.locator("#error").inner_text()
    page.fill("#job-prefix", "/data/local-files/?d=photos/")
    page.click("#job-submit")
    page.wait_for_selector("#jobs-body tr")
    row = page.locator("#jobs-body tr").first
    row.locator(".state.succeeded").wait_for(timeout=60_000)
    job_id = row.get_attribute("data-job")
    r = httpx.get(f"{demo_server.url}/jobs/{job_id}/results", timeout=60)
    with zipfile.ZipFile(io.BytesIO(r.content)) as zf:
        names = zf.namelist()
        overlay = np.asarray(Image.open(io.BytesIO(zf.read("overlay/p0.png"))).convert("RGB"))
        mask = np.asarray(Image.open(io.BytesIO(zf.read("png/p0.png"))))
    for kind in ("png/", "overlay/", "npz/", "labelstudio", "cvat", "coco"):
        assert any(n.startswith(kind) for n in names), (kind, names)
    # the gallery's overlays are the same tinted, outlined overlay as the page's
    assert (mask == 1).any() and mask_edges(mask).any()
    rgb = np.asarray(Image.open(io.BytesIO(photos["p0.jpg"])).convert("RGB"))
    np.testing.assert_array_equal(overlay, mask_overlay(rgb, mask))
