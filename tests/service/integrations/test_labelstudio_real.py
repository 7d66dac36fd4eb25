"""End to end against the real Label Studio (the pinned PyPI release, started on loopback),
following docs/labelstudio.md step by step: the docs' labelling config, photos uploaded to a
project, `seam serve` with the bundled demo model connected as the ML backend (Basic auth,
Label Studio's settings for a backend on localhost), Label Studio asked to retrieve
predictions, with a legacy token and with a personal access token; and the batch route, a
job's `labelstudio` export imported into a project whose images Label Studio serves from
local files. Every prediction's brush regions must carry the config's label values and decode
(label_studio_sdk's decoder) to the mask our /segment computes for the same image.
"""
from __future__ import annotations

import io
import re
import sys
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from label_studio_sdk.converter.brush import decode_rle
from label_studio_sdk.label_interface import LabelInterface
from PIL import Image

from testkit.processes import seam_serve_argv, service_env, start_server, stop_process
from tests.photos import Shape, demo_photo
from tests.service.integrations.labelstudio_real import (
    LEGACY_TOKEN,
    LabelStudio,
    docs_label_config,
    label_studio,
    png,
    require_label_studio,
)
from tests.support import wait_done

pytestmark = [pytest.mark.slow, pytest.mark.timeout(400)]

require_label_studio()

API_KEY = "e2e-seam-key-0123456789"
# name -> (width, height, shapes): non-square, landscape and portrait, one class and two; shapes
# the demo model finds in them (it misses most rings and crosses in photos)
PHOTOS = {
    "landscape": (256, 176, [Shape("disc", 0.3, 0.45, 0.3), Shape("square", 0.73, 0.55, 0.27)]),
    "portrait": (168, 240, [Shape("triangle", 0.5, 0.5, 0.4)]),
    "wide": (300, 150, [Shape("square", 0.5, 0.5, 0.4)]),
}
EXPECTED_LABELS = {"Disc", "Square", "Triangle"}


@pytest.fixture(scope="module")
def photos() -> dict[str, bytes]:
    return {name: png(demo_photo(w, h, shapes, seed=i)[0]) for i, (name, (w, h, shapes)) in enumerate(PHOTOS.items())}


@pytest.fixture(scope="module")
def ls(tmp_path_factory: pytest.TempPathFactory, photos: dict[str, bytes]) -> Iterator[LabelStudio]:
    root = tmp_path_factory.mktemp("ls-files")
    (root / "photos").mkdir()
    for name, data in photos.items():
        (root / "photos" / f"{name}.png").write_bytes(data)
    with label_studio(tmp_path_factory.mktemp("ls"), root) as server:
        yield server


@pytest.fixture(scope="module")
def seam_for(ls: LabelStudio, tmp_path_factory: pytest.TempPathFactory) -> Iterator:
    """seam_for(token) -> the URL of a `seam serve` (bundled models/) set up as docs step 1 says."""
    procs = []

    def start(token: str) -> str:
        tmp = tmp_path_factory.mktemp("seam")
        env = service_env(SEAM_API_KEYS=API_KEY, SEAM_LABELSTUDIO_URL=ls.url, SEAM_LABELSTUDIO_API_KEY=token,
                          SEAM_LABELSTUDIO_ALLOW_PRIVATE="true", SEAM_DATA_DIR=str(tmp / "data"), SEAM_THREADS="1")
        url, proc = start_server(seam_serve_argv, env, tmp / "seam.log", timeout=90)
        procs.append(proc)
        return url

    yield start
    for p in procs:
        stop_process(p)


def create_project(api: httpx.Client, title: str) -> int:
    r = api.post("/api/projects", json={"title": title, "label_config": docs_label_config()})
    assert r.status_code == 201, r.text
    return r.json()["id"]


def our_mask(seam: str, data: bytes, method: str) -> np.ndarray:
    r = httpx.post(f"{seam}/segment", headers={"X-API-Key": API_KEY}, files={"image": ("x.png", data, "image/png")},
                   data={"method": method, "format": "png"}, timeout=120)
    assert r.status_code == 200, r.text
    return np.asarray(Image.open(io.BytesIO(r.content)))


def check_predictions(api: httpx.Client, project: int, seam: str, image_of: dict[int, bytes]) -> set[str]:
    """Each task has one prediction of `seam-wsss:seam-demo:<method>` whose regions carry the
    config's label values and decode to our /segment mask; returns the labels seen."""
    config = docs_label_config()
    li = LabelInterface(config)
    values = dict(re.findall(r'value="(\w+)" predicted_values="(\w+)"', config))  # Disc -> disc
    classes = ["disc", "square", "triangle", "ring", "cross"]
    seen: set[str] = set()
    for task_id, data in image_of.items():
        r = api.get("/api/predictions", params={"task": task_id})
        assert r.status_code == 200, r.text
        preds = r.json()
        assert len(preds) == 1, f"task {task_id}: {len(preds)} predictions"
        pred = preds[0]
        m = re.fullmatch(r"seam-wsss:seam-demo:(\w+)", pred["model_version"])
        assert m, pred["model_version"]
        assert pred["result"], f"task {task_id}: no regions"
        assert li.validate_prediction(pred, return_errors=True) == []
        expected = our_mask(seam, data, m.group(1))
        h, w = expected.shape
        for reg in pred["result"]:
            assert reg["type"] == "brushlabels" and (reg["original_width"], reg["original_height"]) == (w, h)
            label = reg["value"]["brushlabels"][0]
            assert label in values, f"{label!r} is not a label value of the config"
            c = classes.index(values[label])
            decoded = decode_rle(reg["value"]["rle"]).reshape(h, w, 4)[:, :, 3] == 255
            assert decoded.any() and np.array_equal(decoded, expected == c + 1), (task_id, label)
            seen.add(label)
        assert {classes[v - 1] for v in np.unique(expected) if 0 < v <= len(classes)} == \
               {values[g["value"]["brushlabels"][0]] for g in pred["result"]}, f"task {task_id}: classes differ"
    return seen


@pytest.mark.parametrize("token_kind", ["legacy", "personal"])
def test_label_studio_retrieves_our_predictions(ls: LabelStudio, seam_for, photos: dict[str, bytes],
                                                token_kind: str) -> None:
    started = time.monotonic()
    with ls.api() as api:
        token = LEGACY_TOKEN if token_kind == "legacy" else ls.personal_access_token()
        if token_kind == "personal":
            # Label Studio does not take a personal access token as a Bearer token itself
            assert api.get("/api/current-user/whoami", headers={"Authorization": f"Bearer {token}"}).status_code == 401
        seam = seam_for(token)
        project = create_project(api, f"seam e2e {token_kind}")
        # Import: upload the photos
        r = api.post(f"/api/projects/{project}/import",
                     files=[(f"{name}.png", (f"{name}.png", data, "image/png")) for name, data in photos.items()])
        assert r.status_code == 201, r.text
        tasks = api.get("/api/tasks", params={"project": project}).json()["tasks"]
        by_name = {re.sub(r"^.*?-", "", Path(t["data"]["image"]).stem): t["id"] for t in tasks}
        assert sorted(by_name) == sorted(photos)
        # Settings -> Model -> Connect Model (Basic auth, password = one of SEAM_API_KEYS)
        r = api.post("/api/ml", json={"project": project, "title": "seam-wsss", "url": f"{seam}/labelstudio",
                                      "auth_method": "BASIC_AUTH", "basic_auth_user": "seam",
                                      "basic_auth_pass": API_KEY, "is_interactive": False})
        assert r.status_code == 201, r.text
        assert r.json()["state"] == "CO", r.json()  # connected: /health and /setup answered
        # Data Manager: select all tasks -> Actions -> Retrieve Predictions
        r = api.post("/api/dm/actions", params={"id": "retrieve_tasks_predictions", "project": project},
                     json={"selectedItems": {"all": True, "excluded": []}})
        assert r.status_code == 200, r.text
        seen = check_predictions(api, project, seam, {by_name[n]: photos[n] for n in photos})
    assert seen == EXPECTED_LABELS
    print(f"\nLabel Studio live predictions ({token_kind} token): {time.monotonic() - started:.1f} s", file=sys.stderr)


def test_a_jobs_labelstudio_export_imports_with_labelled_regions(ls: LabelStudio, seam_for,
                                                                 photos: dict[str, bytes]) -> None:
    seam = seam_for(LEGACY_TOKEN)
    key = {"X-API-Key": API_KEY}
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in photos.items():
            zf.writestr(f"{name}.png", data)
    r = httpx.post(f"{seam}/jobs", headers=key, files={"archive": ("photos.zip", buf.getvalue(), "application/zip")},
                   data={"outputs": "png,labelstudio", "image_url_prefix": "/data/local-files/?d=photos/"}, timeout=60)
    assert r.status_code == 202, r.text
    job = r.json()["id"]
    with httpx.Client(base_url=seam, headers=key, timeout=60) as client:
        assert wait_done(client, job, 120)["state"] == "succeeded"
    with ls.api() as api:
        project = create_project(api, "seam e2e batch")
        # Settings -> Cloud Storage -> Add Source Storage -> Local files (no sync: the tasks come from the export)
        r = api.post("/api/storages/localfiles", json={"project": project, "title": "photos", "use_blob_urls": True,
                                                       "path": str(ls.files_root / "photos")})
        assert r.status_code == 201, r.text
        config = api.get(f"/api/projects/{project}").json()["label_config"]
        r = httpx.get(f"{seam}/jobs/{job}/export/labelstudio", headers=key, params={"label_config": config})
        assert r.status_code == 200, r.text
        r = api.post(f"/api/projects/{project}/import", content=r.content, headers={"Content-Type": "application/json"})
        assert r.status_code == 201, r.text
        tasks = api.get("/api/tasks", params={"project": project}).json()["tasks"]
        image_of = {}
        for t in tasks:
            served = api.get(t["data"]["image"])  # Label Studio serves the image the task names
            assert served.status_code == 200 and served.content == photos[Path(t["data"]["image"]).stem]
            image_of[t["id"]] = served.content
        assert len(image_of) == len(photos)
        seen = check_predictions(api, project, seam, image_of)
    assert seen == EXPECTED_LABELS
