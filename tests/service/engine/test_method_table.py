"""The methods table is the single source: a toy method registered in it (and nowhere else)
reaches the request schemas and their OpenAPI enum, GET /models (each model's methods and the
method details the web page lists), the engines' dispatch (a /segment call, a job, the ONNX
engine), where it may run, and Label Studio's method setting; removed, it is gone everywhere."""
from __future__ import annotations

import io
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pydantic import ValidationError
from seam.service.engine import methods
from seam.service.engine.base import SegmentResult
from seam.service.engine.methods import Method
from seam.service.engine.runners.host import MethodHost, SegmentCall
from seam.service.integrations.ls_settings import LabelStudioSettings

from seam.common.cam import cams_to_label, present_classes
from tests.service.fakes import FakeEngine, assert_error, encode, rgb_image, zip_bytes
from tests.service.fakes.onnx_models import write_model
from tests.service.integrations.helpers import LS_TOKEN, FakeLabelStudio
from tests.support import wait_done

TOY = "toy"
LS_CONFIG = """<View>
  <Image name="image" value="$image"/>
  <BrushLabels name="tag" toName="image">
    <Label value="red"/><Label value="green"/><Label value="blue"/>
  </BrushLabels>
</View>"""


class ToyRunner:
    """Every raw CAM above zero (the built-in cam method asks 0.26); remembers its calls."""

    def __init__(self) -> None:
        self.calls: list[tuple[MethodHost, SegmentCall]] = []

    def __call__(self, host: MethodHost, call: SegmentCall) -> list[SegmentResult]:
        self.calls.append((host, call))
        works = host.working_cams(call.rgbs, call.labels, False, call.max_side)
        return [_toy_result(rgb, res.cams, res.classes, res.scores, call.method, res)
                for rgb, res in zip(call.rgbs, works, strict=True)]


def _toy_result(rgb, cams, classes, scores, method, res=None) -> SegmentResult:
    label = cams_to_label(cams, classes, 0.0, out_hw=rgb.shape[:2])
    return SegmentResult(label=label, classes=present_classes(label, classes), scores=scores, method=method, cams=res)


def toy_label(rgb: np.ndarray) -> np.ndarray:
    """What the toy method gives on the fake engine, computed without the table."""
    res = FakeEngine().cam(rgb, refined=False)
    return _toy_result(rgb, res.cams, res.classes, res.scores, TOY).label


@pytest.fixture
def toy(request) -> Iterator[ToyRunner]:
    """Registers the toy method for one test (indirect param: {"where": ..., "before": ...});
    the table is restored after it."""
    opts = getattr(request, "param", {})
    saved = dict(methods.METHODS)
    runner = ToyRunner()
    try:
        methods.register(Method(TOY, ("seam",), runner, "Toy", "every raw CAM above zero", cams="raw",
                                where=frozenset(opts.get("where", methods.PLACES))), before=opts.get("before"))
        yield runner
    finally:
        methods.METHODS.clear()
        methods.METHODS.update(saved)


def _segment(client, rgb: np.ndarray, **fields):
    return client.post("/segment", files={"image": ("x.png", encode(rgb), "image/png")}, data=fields)


def _label_png(content: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(content)))


def _submit(client, imgs: dict[str, np.ndarray], **fields):
    archive = zip_bytes({f"{iid}.png": encode(a) for iid, a in imgs.items()})
    return client.post("/jobs", files={"archive": ("a.zip", archive, "application/zip")}, data=fields)


def test_a_registered_method_reaches_the_schemas_and_models(toy, client):
    comps = client.get("/openapi.json").json()["components"]["schemas"]
    fields = [comps["Body_segment_segment_post"]["properties"]["method"]["anyOf"][0],
              comps["DirectoryJobRequest"]["properties"]["method"]["anyOf"][0],
              comps["JobUploadForm"]["properties"]["method"],
              comps["DetectRequest"]["properties"]["method"]["anyOf"][0]]
    assert all(f["enum"] == ["deeplab", "rw", "pcm", "cam", TOY] for f in fields)
    assert "toy: every raw CAM above zero" in comps["JobUploadForm"]["properties"]["method"]["description"]

    body = client.get("/models").json()
    assert body["methods"] == ["pcm", "cam", TOY] and body["default_method"] == "pcm"  # last in the table: last choice
    assert body["models"][0]["methods"] == ["pcm", "cam", TOY]
    assert body["method_details"][-1] == {"name": TOY, "label": "Toy", "description": "every raw CAM above zero",
                                          "models": ["seam"], "where": ["sync", "jobs"], "cams": "raw",
                                          "plain_threshold": False}


def test_a_registered_method_segments_synchronously_and_in_jobs(toy, client):
    rgb = rgb_image(30, 40, seed=3)
    r = _segment(client, rgb, method=TOY)
    assert r.status_code == 200, r.text
    assert r.headers["X-Seam-Method"] == TOY and len(toy.calls) == 1
    np.testing.assert_array_equal(_label_png(r.content), toy_label(rgb))
    assert (_label_png(r.content) != _label_png(_segment(client, rgb, method="cam").content)).any()  # not cam's

    imgs = {f"im{i}": rgb_image(20 + i, 30 + 2 * i, seed=i) for i in range(3)}
    r = _submit(client, imgs, method=TOY, outputs="png")
    assert r.status_code == 202, r.text
    job = wait_done(client, r.json()["id"])
    assert (job["state"], job["done"], job["method"]) == ("succeeded", 3, TOY)
    zf = zipfile.ZipFile(io.BytesIO(client.get(f"/jobs/{job['id']}/results").content))
    for iid, a in imgs.items():
        np.testing.assert_array_equal(_label_png(zf.read(f"png/{iid}.png")), toy_label(a))


@pytest.mark.parametrize("toy", [{"before": "pcm"}], indirect=True)
def test_the_tables_order_is_the_preference(toy, client):
    assert client.get("/models").json()["default_method"] == TOY
    rgb = rgb_image(24, 32, seed=5)
    r = _segment(client, rgb)
    assert r.status_code == 200 and r.headers["X-Seam-Method"] == TOY
    np.testing.assert_array_equal(_label_png(r.content), toy_label(rgb))


@pytest.mark.parametrize("toy", [{"where": ("jobs",), "before": "pcm"}], indirect=True)
def test_a_jobs_only_method_is_refused_synchronously_and_is_the_jobs_default(toy, client):
    toy.calls.clear()  # the app's warm-up ran the best method
    assert_error(_segment(client, rgb_image(), method=TOY), 422, "method_unavailable", "runs only in jobs")
    rgb = rgb_image(24, 32, seed=6)
    r = _segment(client, rgb)  # the best method for a synchronous request is the next one
    assert r.headers["X-Seam-Method"] == "pcm" and not toy.calls
    assert client.get("/models").json()["method_details"][0]["where"] == ["jobs"]
    r = _submit(client, {"a": rgb}, outputs="png")  # no method: the best one for jobs
    job = wait_done(client, r.json()["id"])
    assert job["state"] == "succeeded" and len(toy.calls) == 1
    zf = zipfile.ZipFile(io.BytesIO(client.get(f"/jobs/{job['id']}/results").content))
    np.testing.assert_array_equal(_label_png(zf.read("png/a.png")), toy_label(rgb))


@pytest.mark.parametrize("toy", [{"where": ("sync",)}], indirect=True)
def test_a_sync_only_method_is_refused_for_jobs(toy, client):
    assert_error(_submit(client, {"a": rgb_image()}, method=TOY), 422, "method_unavailable", "runs only in sync")
    assert _segment(client, rgb_image(), method=TOY).status_code == 200


def test_label_studio_predicts_with_a_registered_method(toy, client):
    with pytest.raises(ValidationError, match="unknown method"):
        LabelStudioSettings(method="no_such_method")
    ls = FakeLabelStudio()
    try:
        rgb = rgb_image(26, 34, seed=7)
        ls.files["/data/upload/1/a.png"] = encode(rgb)
        client.app.state.labelstudio_settings = LabelStudioSettings(url=ls.url, api_key=LS_TOKEN, allow_private=True,
                                                                    method=TOY)
        assert client.get("/labelstudio/versions").json()["versions"] == [f"seam-wsss:fake:{TOY}"]
        r = client.post("/labelstudio/predict", json={"tasks": [{"id": 1, "data": {"image": "/data/upload/1/a.png"}}],
                                                      "label_config": LS_CONFIG})
        assert r.status_code == 200, r.text
        (result,) = r.json()["results"]
        assert result["model_version"] == f"seam-wsss:fake:{TOY}" and len(toy.calls) == 1
        assert {reg["value"]["brushlabels"][0] for reg in result["result"]} == {
            ["red", "green", "blue"][c - 1] for c in np.unique(toy_label(rgb)) if c}
    finally:
        ls.close()


def test_the_onnx_engine_dispatches_to_a_registered_method(toy, tmp_path: Path):
    from seam.service.engine.onnx_engine import OnnxEngine

    write_model(tmp_path, "seam-a", "seam")
    eng = OnnxEngine(tmp_path, threads=1, warmup=False)
    assert eng.methods() == ["pcm", "cam", TOY]
    rgb = rgb_image(37, 45, seed=2)
    seg = eng.segment(rgb, [0, 2], method=TOY)
    (host, call), = toy.calls
    assert host is eng and call.labels == [[0, 2]] and seg.method == TOY
    raw = eng.cam(rgb, [0, 2], refined=False, size="working")
    np.testing.assert_array_equal(seg.label, cams_to_label(raw.cams, raw.classes, 0.0, out_hw=(37, 45)))
    # its memory estimate is the raw CAMs' (cams="raw": no PCM), and admission runs before it
    assert eng.estimate((300, 400), TOY).needed_bytes == eng.estimate((300, 400), "cam").needed_bytes


def test_an_unregistered_method_is_unknown_everywhere(client):
    assert TOY not in methods.METHODS
    assert_error(_segment(client, rgb_image(), method=TOY), 422, "validation_error", "unknown method")
    assert TOY not in client.get("/models").json()["methods"]
    enum = client.get("/openapi.json").json()["components"]["schemas"]["JobUploadForm"]["properties"]["method"]
    assert enum["enum"] == ["deeplab", "rw", "pcm", "cam"]
