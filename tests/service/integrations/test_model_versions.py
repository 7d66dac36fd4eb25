"""The labelling tools name a model version too: Label Studio's /predict takes params.model (or
SEAM_LABELSTUDIO_MODEL) and its model_version names NAME:VERSION; CVAT's /detect takes `model`;
both answer X-Seam-Model with the version that computed them (real ONNX versions of the demo
model that answer differently, testkit.versions)."""
from __future__ import annotations

import base64
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from seam.service.core.config import Settings
from seam.service.integrations.ls_settings import LabelStudioSettings
from seam.service.main import create_app

from testkit.processes import wait_until
from testkit.versions import BG, png_bytes, publish_variant
from tests.service.integrations.helpers import LS_TOKEN
from tests.support import shapes_photo

CONFIG = """<View>
  <Image name="image" value="$image"/>
  <BrushLabels name="tag" toName="image"><Label value="disc"/><Label value="triangle"/></BrushLabels>
</View>"""


@pytest.fixture
def client(tmp_path: Path, fake_ls):
    repo = tmp_path / "models"
    for n in (1, 2):
        publish_variant(repo, "shapes", BG[n], tmp_path)
    app = create_app(Settings(data_dir=tmp_path / "data", engine="onnx", models_dir=repo, warmup=False, threads=1))
    app.state.labelstudio_settings = LabelStudioSettings(url=fake_ls.url, api_key=LS_TOKEN, allow_private=True)
    with TestClient(app) as c:
        wait_until(lambda: c.get("/readyz").status_code == 200, 60, 0.05)
        yield c


def _predict(c: TestClient, **params):
    body = {"tasks": [{"id": 1, "data": {"image": "/data/upload/1/a.png"}}], "project": "1", "label_config": CONFIG,
            "params": params}
    return c.post("/labelstudio/predict", json=body)


def test_labelstudio_predict_names_the_version(client: TestClient, fake_ls) -> None:
    fake_ls.files["/data/upload/1/a.png"] = png_bytes(shapes_photo(64, 96))
    r1 = _predict(client)
    assert r1.status_code == 200, r1.text
    assert r1.headers["X-Seam-Model"] == "shapes:1"
    assert r1.json()["model_version"].startswith("seam-wsss:shapes:1:")
    assert client.get("/labelstudio/versions").json()["versions"] == [r1.json()["model_version"]]
    r2 = _predict(client, model="shapes:2")
    assert r2.headers["X-Seam-Model"] == "shapes:2" and r2.json()["model_version"].startswith("seam-wsss:shapes:2:")
    assert r1.json()["results"] != r2.json()["results"]  # the versions segment differently
    client.app.state.labelstudio_settings = client.app.state.labelstudio_settings.model_copy(
        update={"model": "shapes:2"})
    assert _predict(client).headers["X-Seam-Model"] == "shapes:2"  # SEAM_LABELSTUDIO_MODEL
    missing = _predict(client, model="shapes:9")
    assert missing.status_code == 404 and "no version 9" in missing.json()["error"]["message"]
    assert _predict(client, model=3).status_code == 422


def test_cvat_detect_names_the_version(client: TestClient) -> None:
    image = base64.b64encode(png_bytes(shapes_photo(64, 96))).decode()
    answers = {}
    for model in ("shapes:1", "shapes:2"):
        r = client.post("/cvat/detect", json={"image": image, "model": model})
        assert r.status_code == 200 and r.headers["X-Seam-Model"] == model
        answers[model] = r.json()
    assert answers["shapes:1"] != answers["shapes:2"]
    assert client.post("/cvat/detect", json={"image": image}).headers["X-Seam-Model"] == "shapes:1"
    assert client.post("/cvat/detect", json={"image": image, "model": "nope"}).status_code == 404
