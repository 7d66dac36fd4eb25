"""CVAT: the cvat-sdk auto-annotation function run through cvat-sdk's own driver
(`cvat_sdk.auto_annotation.annotate_task`, what `cvat-cli task auto-annotate` calls) with a
stand-in for the server side only; the nuclio handler and /cvat/detect; masks decoded with
`cvat_sdk.masks.decode_mask`."""
from __future__ import annotations

import base64
import importlib.util
import io
import json
import logging
from collections.abc import Iterator
from types import SimpleNamespace

import numpy as np
import pytest
from cvat_cli._internal.common import FunctionLoader
from cvat_sdk.auto_annotation import BadFunctionError
from cvat_sdk.auto_annotation import driver as cvat_driver
from cvat_sdk.masks import decode_mask
from matplotlib.path import Path as MplPath
from PIL import Image
from scipy import ndimage
from seam.service.fake_engine import FakeEngine
from seam.service.integrations.cvat_function import SeamFunction, engine_segmenter

from testkit import REPO
from testkit.processes import wait_until
from tests.service.fakes import encode, scene
from tests.service.integrations.helpers import LIVE_KEY
from tests.support import serve_in_thread, shapes_photo

ROOT = REPO
SIZES = [(23, 37), (29, 51), (31, 17)]


class FakeTaskDataset:
    """What the driver reads of `cvat_sdk.datasets.TaskDataset`: labels and samples."""

    def __init__(self, images: list[np.ndarray], label_names: list[str]) -> None:
        self.labels = [SimpleNamespace(name=n, id=100 + i, type="any", attributes=[], sublabels=[])
                       for i, n in enumerate(label_names)]
        self.samples = [SimpleNamespace(frame_index=i, frame_name=f"frames/img{i}.png",
                                        media=SimpleNamespace(load_image=lambda im=im: Image.fromarray(im)))
                        for i, im in enumerate(images)]


class FakeClient:
    def __init__(self) -> None:
        self.logger = logging.getLogger("test.cvat")
        self.uploaded = None

        def partial_update_annotations(action, task_id, patched_labeled_data_request):
            self.uploaded = (action, task_id, patched_labeled_data_request)

        self.tasks = SimpleNamespace(api=SimpleNamespace(partial_update_annotations=partial_update_annotations))


def run_driver(monkeypatch, function, images, **kw):
    names = [lab.name for lab in function.spec.labels]
    monkeypatch.setattr(cvat_driver, "TaskDataset",
                        lambda client, task_id, load_annotations: FakeTaskDataset(images, names))
    client = FakeClient()
    cvat_driver.annotate_task(client, 42, function, **kw)
    action, task_id, req = client.uploaded
    assert (action, task_id) == ("create", 42)
    return req.shapes, req.tags


def test_function_masks_through_the_sdk_driver(monkeypatch) -> None:
    engine = FakeEngine()
    images = [scene(h, w, seed=i) for i, (h, w) in enumerate(SIZES)]
    fn = SeamFunction(engine_segmenter(engine, method="pcm"), engine.foreground_classes())
    shapes, tags = run_driver(monkeypatch, fn, images)
    assert tags == []
    got: dict[tuple[int, int], np.ndarray] = {}
    for s in shapes:
        assert s.type.value == "mask" and s.source == "auto"
        h, w = images[s.frame].shape[:2]
        got[(s.frame, s.label_id - 100)] = decode_mask(s.points, image_width=w, image_height=h)
    expected = {}
    for f, rgb in enumerate(images):
        seg = engine.segment(rgb, None, method="pcm")
        for c in seg.classes:
            if (seg.label == c + 1).any():
                expected[(f, c)] = seg.label == c + 1
    assert got.keys() == expected.keys() and len(expected) >= 4
    for k in expected:
        assert np.array_equal(got[k], expected[k]), k


def test_function_polygons_when_cvat_asks(monkeypatch) -> None:
    engine = FakeEngine()
    images = [scene(h, w, seed=i) for i, (h, w) in enumerate(SIZES[:2])]
    fn = SeamFunction(engine_segmenter(engine, method="pcm"), engine.foreground_classes(), min_area=1)
    shapes, _ = run_driver(monkeypatch, fn, images, conv_mask_to_poly=True)  # the driver rejects masks here
    assert shapes and all(s.type.value == "polygon" for s in shapes)
    for f, rgb in enumerate(images):
        h, w = rgb.shape[:2]
        seg = engine.segment(rgb, None, method="pcm")
        yy, xx = np.mgrid[0:h, 0:w]
        centres = np.stack([xx.ravel() + 0.5, yy.ravel() + 0.5], 1)
        for c in seg.classes:
            raster = np.zeros(h * w, bool)
            for s in shapes:
                if s.frame == f and s.label_id - 100 == c:
                    raster |= MplPath(np.asarray(s.points).reshape(-1, 2)).contains_points(centres)
            expected = ndimage.binary_fill_holes(seg.label == c + 1, structure=np.ones((3, 3)))
            assert np.array_equal(raster.reshape(h, w), expected)


def test_a_mask_returned_despite_conv_mask_to_poly_is_what_the_driver_rejects(monkeypatch) -> None:
    """The check above can fail: a function ignoring the flag is refused by cvat-sdk."""
    engine = FakeEngine()

    class Stubborn(SeamFunction):
        def detect(self, context, image):
            return super().detect(SimpleNamespace(frame_name=context.frame_name, conf_threshold=None,
                                                  conv_mask_to_poly=False), image)

    fn = Stubborn(engine_segmenter(engine), engine.foreground_classes())
    with pytest.raises(BadFunctionError):
        run_driver(monkeypatch, fn, [scene(23, 37)], conv_mask_to_poly=True)


def test_conf_threshold_drops_low_scoring_classes(monkeypatch) -> None:
    engine = FakeEngine()
    rgb = scene(29, 51)
    seg = engine.segment(rgb, None, method="pcm")
    scores = {c: float(seg.scores[c]) for c in seg.classes}
    assert len(scores) == 2 and len(set(scores.values())) == 2
    cut = float(np.mean(list(scores.values())))
    fn = SeamFunction(engine_segmenter(engine, method="pcm"), engine.foreground_classes())
    shapes, _ = run_driver(monkeypatch, fn, [rgb], conf_threshold=cut)
    assert sorted(s.label_id - 100 for s in shapes) == [c for c, v in scores.items() if v >= cut]


def test_frame_labels_file_sets_image_level_labels(monkeypatch, tmp_path) -> None:
    engine = FakeEngine()
    rgb = scene(23, 37)
    fn = SeamFunction(engine_segmenter(engine, method="pcm"), engine.foreground_classes(),
                      labels_by_frame={"img0": [2]})
    shapes, _ = run_driver(monkeypatch, fn, [rgb])
    assert [s.label_id - 100 for s in shapes] == [2]
    expected = engine.segment(rgb, [2], method="pcm").label == 3
    assert np.array_equal(decode_mask(shapes[0].points, image_width=37, image_height=23), expected)


def test_cvat_cli_loader_and_http_mode(monkeypatch, live_api) -> None:
    """cvat-cli's own FunctionLoader builds the function from `-p` parameters; it calls our API."""
    fn = FunctionLoader("seam.service.integrations.cvat_function", None, {"url": live_api, "api_key": LIVE_KEY}).load()
    assert [lab.name for lab in fn.spec.labels] == FakeEngine().foreground_classes()
    images = [scene(h, w, seed=i) for i, (h, w) in enumerate(SIZES[:2])]
    shapes, _ = run_driver(monkeypatch, fn, images)
    engine = FakeEngine()
    n = 0
    for s in shapes:
        rgb = images[s.frame]
        h, w = rgb.shape[:2]
        c = s.label_id - 100
        expected = engine.segment(rgb, None).label == c + 1
        assert np.array_equal(decode_mask(s.points, image_width=w, image_height=h), expected)
        n += 1
    assert n >= 3


def _load_handler():
    spec = importlib.util.spec_from_file_location("seam_nuclio_main", ROOT / "docker/cvat-nuclio/main.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


class NuclioContext:
    def __init__(self) -> None:
        self.user_data = SimpleNamespace()
        self.logger = logging.getLogger("nuclio")

    class Response:
        def __init__(self, body, headers, content_type, status_code) -> None:
            self.body, self.headers, self.content_type, self.status_code = body, headers, content_type, status_code


def decode_nuclio_mask(mask: list[int], h: int, w: int) -> np.ndarray:
    x1, y1, x2, y2 = mask[-4:]
    crop = np.asarray(mask[:-4]).reshape(y2 - y1 + 1, x2 - x1 + 1)
    assert set(np.unique(crop)) <= {0, 255}
    full = np.zeros((h, w), bool)
    full[y1:y2 + 1, x1:x2 + 1] = crop == 255
    return full


def test_nuclio_handler_against_the_live_api(monkeypatch, live_api) -> None:
    monkeypatch.setenv("SEAM_URL", live_api)
    monkeypatch.setenv("SEAM_API_KEY", LIVE_KEY)
    mod = _load_handler()
    ctx = NuclioContext()
    mod.init_context(ctx)
    rgb = scene(29, 51)
    event = SimpleNamespace(body={"image": base64.b64encode(encode(rgb)).decode(), "threshold": 0.0})
    resp = mod.handler(ctx, event)
    assert resp.status_code == 200 and resp.content_type == "application/json"
    items = json.loads(resp.body)
    seg = FakeEngine().segment(rgb)
    names = FakeEngine().foreground_classes()
    assert sorted(i["label"] for i in items) == sorted(names[c] for c in seg.classes)
    for item in items:
        assert item["type"] == "mask" and 0.0 <= float(item["confidence"]) <= 1.0
        assert len(item["points"]) >= 6 and len(item["points"]) % 2 == 0
        c = names.index(item["label"])
        assert np.array_equal(decode_nuclio_mask(item["mask"], 29, 51), seg.label == c + 1)
    # a high threshold drops every class; a wrong key is passed through as the API's 401
    resp = mod.handler(ctx, SimpleNamespace(body=json.dumps({"image": event.body["image"], "threshold": 1.0}).encode()))
    assert resp.status_code == 200
    assert all(float(i["confidence"]) >= 1.0 for i in json.loads(resp.body))
    assert len(json.loads(resp.body)) < len(items) or all(float(i["confidence"]) >= 1.0 for i in items)
    ctx.user_data.key = "wrong-key-0123456789abcdef"
    assert mod.handler(ctx, event).status_code == 401


def test_detect_route_errors(make_app) -> None:
    client = make_app()
    assert client.post("/cvat/detect", json={"image": "***"}).status_code == 422
    assert client.post("/cvat/detect", json={"image": base64.b64encode(b"nope").decode()}).status_code == 415
    r = client.post("/cvat/detect", json={"image": base64.b64encode(encode(scene(9, 9))).decode(),
                                          "labels": ["unicorn"]})
    assert r.status_code == 422 and r.json()["error"]["code"] == "unknown_class"


def test_function_yaml_lists_the_classes() -> None:
    import yaml
    from seam.service.integrations.cvat import function_yaml

    doc = yaml.safe_load(function_yaml(["cat", 'odd "name"'], "http://seam:8000"))
    assert doc["metadata"]["annotations"]["type"] == "detector"
    assert json.loads(doc["metadata"]["annotations"]["spec"]) == [
        {"id": 0, "name": "cat", "type": "mask"}, {"id": 1, "name": 'odd "name"', "type": "mask"}]
    assert doc["spec"]["handler"] == "main:handler"
    shipped = yaml.safe_load((ROOT / "docker/cvat-nuclio/function.yaml").read_text())
    manifest = json.loads((ROOT / "models/seam-demo/manifest.json").read_text())
    assert [s["name"] for s in json.loads(shipped["metadata"]["annotations"]["spec"])] == manifest["class_names"][1:]


# --- the bundled model on photo-like frames: non-square, one class, 4000x3000 ----------------
DEMO_FRAMES = {"landscape": (300, 451, False), "portrait": (451, 300, False), "one-class": (240, 320, True),
               "12mp": (3000, 4000, False)}  # (h, w, one class)


@pytest.fixture(scope="module")
def demo_frames() -> dict[str, np.ndarray]:
    return {k: shapes_photo(h, w, seed=i, one_class=one) for i, (k, (h, w, one)) in enumerate(DEMO_FRAMES.items())}


@pytest.fixture(scope="module")
def demo_engine():
    from seam.service.engine.onnx_engine import OnnxEngine

    return OnnxEngine.from_model_dir(ROOT / "models" / "seam-demo")


@pytest.fixture(scope="module")
def demo_api(tmp_path_factory) -> Iterator[str]:
    """The app with the bundled model (API key LIVE_KEY) on loopback, once its engine is ready."""
    import httpx
    from seam.service.core.config import Settings
    from seam.service.main import create_app

    tmp = tmp_path_factory.mktemp("cvatdemo")
    settings = Settings(data_dir=tmp / "data", models_dir=ROOT / "models", api_keys=[LIVE_KEY], threads=1)
    with serve_in_thread(create_app(settings)) as url:
        wait_until(lambda: httpx.get(f"{url}/readyz", timeout=5).status_code == 200, timeout=120)
        yield url


@pytest.mark.slow
def test_nuclio_handler_with_the_demo_model(monkeypatch, demo_api, demo_frames, demo_engine) -> None:
    """CVAT's request (a JPEG frame, base64) through the handler to the API: every mask decodes
    at the frame's size to the engine's own segmentation of the same decoded frame."""
    monkeypatch.setenv("SEAM_URL", demo_api)
    monkeypatch.setenv("SEAM_API_KEY", LIVE_KEY)
    mod = _load_handler()
    ctx = NuclioContext()
    mod.init_context(ctx)
    names = demo_engine.foreground_classes()
    for key, rgb in demo_frames.items():
        jpeg = encode(rgb, "JPEG", quality=92)
        frame = np.asarray(Image.open(io.BytesIO(jpeg)).convert("RGB"))
        resp = mod.handler(ctx, SimpleNamespace(body={"image": base64.b64encode(jpeg).decode(), "threshold": 0.0}))
        assert resp.status_code == 200, (key, resp.body[:300])
        items = json.loads(resp.body)
        seg = demo_engine.segment(frame)
        expected = {names[c]: seg.label == c + 1 for c in seg.classes if (seg.label == c + 1).any()}
        assert sorted(i["label"] for i in items) == sorted(expected), key
        assert expected, f"{key}: the demo model finds nothing in its own domain"
        h, w = frame.shape[:2]
        for item in items:
            assert np.array_equal(decode_nuclio_mask(item["mask"], h, w), expected[item["label"]]), key
            pts = np.asarray(item["points"]).reshape(-1, 2)
            assert (pts >= 0).all() and (pts[:, 0] < w).all() and (pts[:, 1] < h).all(), key


@pytest.mark.slow
def test_cvat_sdk_function_with_the_demo_model(monkeypatch, demo_frames, demo_engine) -> None:
    """The cvat-sdk function (in-process engine, what `cvat-cli task auto-annotate` runs) through
    cvat-sdk's driver: masks at each frame's size; a labels file with one class gives one shape."""
    frames = list(demo_frames.values())
    fn = SeamFunction(engine_segmenter(demo_engine), demo_engine.foreground_classes(),
                      labels_by_frame={"img2": [0]})  # the one-class frame: "disc"
    shapes, _ = run_driver(monkeypatch, fn, frames)
    by_frame: dict[int, dict[int, np.ndarray]] = {}
    for s in shapes:
        h, w = frames[s.frame].shape[:2]
        by_frame.setdefault(s.frame, {})[s.label_id - 100] = decode_mask(s.points, image_width=w, image_height=h)
    assert sorted(by_frame) == list(range(len(frames)))
    assert list(by_frame[2]) == [0]
    for f, rgb in enumerate(frames):
        seg = demo_engine.segment(rgb, [0] if f == 2 else None)
        expected = {c: seg.label == c + 1 for c in seg.classes if (seg.label == c + 1).any()}
        assert by_frame[f].keys() == expected.keys(), f
        for c, mask in expected.items():
            assert np.array_equal(by_frame[f][c], mask), (f, c)


@pytest.mark.slow
def test_cvat_sdk_function_over_http_on_non_square_frames(monkeypatch, demo_api, demo_frames, demo_engine) -> None:
    """The same function in HTTP mode (`-p url=...`), loaded by cvat-cli's loader."""
    fn = FunctionLoader("seam.service.integrations.cvat_function", None, {"url": demo_api, "api_key": LIVE_KEY}).load()
    frames = [demo_frames["landscape"], demo_frames["portrait"]]
    shapes, _ = run_driver(monkeypatch, fn, frames)
    assert {s.frame for s in shapes} == {0, 1}
    for s in shapes:
        h, w = frames[s.frame].shape[:2]
        expected = demo_engine.segment(frames[s.frame]).label == s.label_id - 100 + 1
        assert np.array_equal(decode_mask(s.points, image_width=w, image_height=h), expected)
