"""What the service returns says what is there: C-ordered CAM archives any reader can load,
maps in [0, 1], no class reported without pixels, working-size maps for clients that draw
them, and what the model knows (its description) on GET /models. With the bundled demo
model on photo-like, non-square images, and with the fake engine."""
from __future__ import annotations

import io
import json
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from seam.service.engine.onnx_engine import OnnxEngine

from seam.common.encoders import decode_cams_npz
from seam.modelrepo.manifest import read_manifest
from tests.photos import Shape, demo_photo
from tests.service.fakes import encode
from tests.support import REPO

DEMO = REPO / "models" / "seam-demo"


@pytest.fixture(scope="module")
def demo_engine() -> OnnxEngine:
    return OnnxEngine.from_model_dir(DEMO, providers="cpu", threads=1)


@pytest.fixture
def demo_client(make_client, demo_engine):
    return make_client(engine=demo_engine)


def _npy_header(npz: bytes, name: str = "cams") -> str:
    with zipfile.ZipFile(io.BytesIO(npz)) as z:
        return z.read(f"{name}.npy")[:128].decode("latin1")


def _post(client, path: str, image: bytes, **fields):
    return client.post(path, files={"image": ("photo.png", image, "image/png")}, data=fields)


def test_one_class_photo_cams_are_c_ordered(demo_client):
    """A 451x300 photo with one class: the single (1, H, W) map came out Fortran-ordered and
    the web page refused it ("Fortran-ordered arrays are not supported")."""
    rgb, _ = demo_photo(451, 300, [Shape("disc", 0.35, 0.5, 0.35)], seed=1)
    for path in ("/cam", "/cam/refined"):
        r = _post(demo_client, path, encode(rgb))
        assert r.status_code == 200, r.text
        assert r.headers["x-seam-classes"] == "disc"
        header = _npy_header(r.content)
        assert "'fortran_order': False" in header and "(1, 300, 451)" in header, header
        classes, cams = decode_cams_npz(r.content)
        assert classes.tolist() == [0] and cams.min() >= 0.0 and cams.max() <= 1.0


def test_working_size_maps_quantised(demo_client):
    """size=working: maps at the size the passes ran at (the demo model's 200 px long side),
    with the image's size alongside; dtype=uint8 stores round(255 x)."""
    rgb, _ = demo_photo(451, 300, [Shape("disc", 0.35, 0.5, 0.35)], seed=1)
    image = encode(rgb)
    f32 = _post(demo_client, "/cam/refined", image, size="working")
    u8 = _post(demo_client, "/cam/refined", image, size="working", dtype="uint8")
    assert f32.status_code == u8.status_code == 200
    assert u8.headers["x-seam-image-size"] == "451x300"
    with np.load(io.BytesIO(u8.content), allow_pickle=False) as z:
        assert z["cams"].dtype == np.uint8 and z["cams"].shape == (1, 133, 200)
        assert z["image_size"].tolist() == [300, 451]
    _, maps = decode_cams_npz(f32.content)
    _, quantised = decode_cams_npz(u8.content)
    assert np.abs(maps - quantised).max() <= 0.5 / 255 + 1e-6
    assert len(u8.content) < len(f32.content) / 2
    # json and png at the working size too
    j = _post(demo_client, "/cam/refined", image, size="working", format="json").json()
    assert (j["width"], j["height"]) == (200, 133)


def test_every_returned_map_lies_in_unit_range(demo_client):
    """Classes asked for by name but absent from the photo: their maps were -1 where the
    release's min-max meets an all-zero map; now they stay in [0, 1]."""
    rgb, _ = demo_photo(300, 451, [Shape("disc", 0.5, 0.4, 0.3)], seed=2)
    r = _post(demo_client, "/cam", encode(rgb), labels="disc,square,triangle,ring,cross", format="json")
    assert r.status_code == 200
    for c in r.json()["classes"]:
        assert 0.0 <= c["min"] <= c["max"] <= 1.0, c


def test_segment_classes_agree_with_the_mask(client):
    """X-Seam-Classes named a class whose mask was empty (here: a threshold above every CAM)."""
    rgb = np.full((40, 60, 3), 90, np.uint8)
    rgb[:, :30] = (230, 30, 30)
    image = encode(rgb)
    r = _post(client, "/segment", image, labels="red", threshold="1.0")
    assert r.status_code == 200
    assert r.headers["x-seam-classes"] == ""
    assert not np.asarray(Image.open(io.BytesIO(r.content))).any()
    j = _post(client, "/segment", image, labels="red", threshold="1.0", format="json").json()
    assert j["classes"] == []
    ok = _post(client, "/segment", image, labels="red", format="json")
    assert ok.headers["x-seam-classes"] == "red" and [c["name"] for c in ok.json()["classes"]] == ["red"]
    assert ok.json()["classes"][0]["area"] > 0


def test_models_say_what_the_model_knows(demo_client):
    body = demo_client.get("/models").json()
    assert body["description"] == "synthetic shapes demo: disc, square, triangle, ring, cross"
    assert body["models"][0]["description"] == body["description"]
    assert body["class_threshold"] == pytest.approx(0.4) and body["default_threshold"] == pytest.approx(0.26)


def test_manifest_without_description_still_loads(tmp_path: Path):
    d = tmp_path / "old-model"
    d.mkdir()
    data = json.loads((DEMO / "manifest.json").read_text())
    data.pop("description")
    (d / "manifest.json").write_text(json.dumps(data))
    for f in ("model.onnx", "pcm.onnx"):
        shutil.copy(DEMO / f, d / f)
    assert read_manifest(d).description is None
    eng = OnnxEngine.from_model_dir(d, providers="cpu", threads=1, warmup=False)
    assert eng.models()[0].description is None
