"""Corrections against the real Label Studio (the pinned release, on loopback): after Connect
Model, seam's /setup puts its Basic auth on the project webhook Label Studio creates for the
backend; an annotation submitted through Label Studio's API reaches our corrections store
through that real webhook (brush RLE decoded pixel for pixel, labels mapped back through the
docs' config); an update replaces it, a delete removes it; the re-sync route agrees."""
from __future__ import annotations

import io
import re
import shutil
import zipfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from seam.common.labelling import ls_rle_encode
from testkit.processes import seam_serve_argv, service_env, start_server, stop_process, wait_until
from tests.photos import Shape, demo_photo
from tests.service.integrations.labelstudio_real import (
    LEGACY_TOKEN,
    LabelStudio,
    docs_label_config,
    label_studio,
    png,
    require_label_studio,
)
from tests.support import REPO

pytestmark = [pytest.mark.slow, pytest.mark.timeout(400)]

require_label_studio()

API_KEY = "e2e-corrections-key-0123456789"
ADMIN_KEY = "e2e-corrections-admin-0123456789"
H, W = 60, 90


def noise_png(seed: int) -> bytes:
    return png(np.random.default_rng(seed).integers(0, 255, (H, W, 3), dtype=np.uint8))


def brush(mask: np.ndarray, label: str) -> dict:
    return {"type": "brushlabels", "from_name": "tag", "to_name": "image", "original_width": W,
            "original_height": H, "image_rotation": 0,
            "value": {"format": "rle", "rle": ls_rle_encode(mask), "brushlabels": [label]}}


@pytest.fixture(scope="module")
def ls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabelStudio]:
    root = tmp_path_factory.mktemp("ls-files")
    with label_studio(tmp_path_factory.mktemp("ls"), root) as server:
        yield server


@pytest.fixture(scope="module")
def seam(ls: LabelStudio, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    tmp = tmp_path_factory.mktemp("seam")
    env = service_env(SEAM_API_KEYS=API_KEY, SEAM_LABELSTUDIO_URL=ls.url, SEAM_LABELSTUDIO_API_KEY=LEGACY_TOKEN,
                      SEAM_LABELSTUDIO_ALLOW_PRIVATE="true", SEAM_DATA_DIR=str(tmp / "data"), SEAM_THREADS="1")
    url, proc = start_server(seam_serve_argv, env, tmp / "seam.log", timeout=90)
    yield url, tmp / "data"
    stop_process(proc)


def authorised_hooks(api: httpx.Client, project: int) -> list[dict]:
    """The project's ML-backend webhooks that carry seam's Basic auth."""
    hooks = api.get("/api/webhooks/", params={"project": project}).json()
    return [h for h in hooks if h["url"].endswith("/labelstudio/webhook")
            and (h.get("headers") or {}).get("Authorization", "").startswith("Basic ")]


def stored(data_dir: Path, project: int, task: int) -> tuple[dict | None, np.ndarray | None]:
    from seam.service.corrections.store import CorrectionStore

    p = CorrectionStore(data_dir).project("labelstudio", str(project))
    it = p.item(f"task-{task}")
    if not it or not it.get("mask"):
        return it, None
    return it, np.array(Image.open(p.path(it["mask"])))


def test_annotations_reach_the_store_through_the_real_webhook(ls: LabelStudio, seam: tuple[str, Path]) -> None:
    url, data_dir = seam
    ours = {"X-API-Key": API_KEY}
    with ls.api(LEGACY_TOKEN) as api:
        r = api.post("/api/projects", json={"title": "corrections", "label_config": docs_label_config()})
        assert r.status_code == 201, r.text
        project = r.json()["id"]
        r = api.post(f"/api/projects/{project}/import",
                     files=[(f"p{i}.png", (f"p{i}.png", noise_png(i), "image/png")) for i in range(2)])
        assert r.status_code == 201, r.text
        tasks = sorted(t["id"] for t in api.get("/api/tasks", params={"project": project}).json()["tasks"])
        r = api.post("/api/ml", json={"project": project, "title": "seam-wsss", "url": f"{url}/labelstudio",
                                      "auth_method": "BASIC_AUTH", "basic_auth_user": "seam",
                                      "basic_auth_pass": API_KEY, "is_interactive": False})
        assert r.status_code == 201 and r.json()["state"] == "CO", r.text
        # Label Studio made the backend's project webhook; seam put its Basic auth on it
        wait_until(lambda: authorised_hooks(api, project), timeout=30, what="the webhook to carry seam's Basic auth")

        square = np.zeros((H, W), bool)
        square[10:40, 20:70] = True
        r = api.post(f"/api/tasks/{tasks[0]}/annotations/", json={"result": [brush(square, "Square")]})
        assert r.status_code == 201, r.text
        ann = r.json()["id"]
        it, mask = wait_until(lambda: (s := stored(data_dir, project, tasks[0]))[1] is not None and s, timeout=60,
                              what="the annotation to reach the store")
        want = np.where(square, 2, 0).astype(np.uint8)  # square is the demo model's class 1 -> value 2
        np.testing.assert_array_equal(mask, want)
        assert it["labels"] == ["square"] and it["ref"]["annotation"] == ann

        disc = np.zeros((H, W), bool)
        disc[5:20, 5:20] = True
        r = api.patch(f"/api/annotations/{ann}/", json={"result": [brush(disc, "Disc")]})
        assert r.status_code == 200, r.text
        wait_until(lambda: (m := stored(data_dir, project, tasks[0])[1]) is not None and (m == 1).sum() == disc.sum(),
                   timeout=60, what="the update to replace the mask")

        r = api.delete(f"/api/annotations/{ann}/")
        assert r.status_code == 204, r.text
        wait_until(lambda: stored(data_dir, project, tasks[0])[1] is None, timeout=60,
                   what="the delete to remove the correction")

    # the re-sync route agrees with what the events left: no correction, both images cached
    r = httpx.post(f"{url}/corrections/labelstudio/{project}/sync", headers=ours, timeout=120)
    assert r.status_code == 200, r.text
    assert (r.json()["corrections"], r.json()["images"]) == (0, 2)
    assert httpx.get(f"{url}/corrections/labelstudio/{project}", headers={"X-API-Key": "x" * 20}).status_code == 401


def archive_of(photos: dict[str, bytes], labels: dict[str, list[str]]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, data in photos.items():
            z.writestr(f"{name}.png", data)
        z.writestr("labels.csv", "".join(f"{n}.png,{';'.join(labels[n])}\n" for n in photos))
    return buf.getvalue()


def wait_training(url: str, tid: str, timeout: float = 300) -> dict:
    def done() -> dict | None:
        r = httpx.get(f"{url}/trainings/{tid}", headers={"X-API-Key": API_KEY}, timeout=30).json()
        return r if r["state"] in ("succeeded", "failed", "cancelled") else None
    return wait_until(done, timeout=timeout, interval=1.0, what=f"training {tid} to finish")


@pytest.mark.timeout(900)
def test_a_fit_from_corrections_becomes_the_projects_model_version(ls: LabelStudio,
                                                                   tmp_path_factory: pytest.TempPathFactory) -> None:
    """Base version m:1 (a short SEAM training), served to Label Studio (SEAM_LABELSTUDIO_MODEL=m);
    corrections submitted in Label Studio; a fit (tiny budget) publishes m:2; promoted, it is the
    model_version of the project's next predictions."""
    tmp = tmp_path_factory.mktemp("seam-fit")
    models = tmp / "models"
    shutil.copytree(REPO / "models" / "seam-demo", models / "seam-demo")
    env = service_env(SEAM_API_KEYS=API_KEY, SEAM_ADMIN_API_KEYS=ADMIN_KEY, SEAM_LABELSTUDIO_URL=ls.url,
                      SEAM_LABELSTUDIO_API_KEY=LEGACY_TOKEN,
                      SEAM_LABELSTUDIO_ALLOW_PRIVATE="true", SEAM_DATA_DIR=str(tmp / "data"), SEAM_THREADS="1",
                      SEAM_MODELS_DIR=str(models), SEAM_LABELSTUDIO_MODEL="m", SEAM_MODELS_POLL_S="1")
    url, proc = start_server(seam_serve_argv, env, tmp / "seam.log", timeout=90)
    ours = {"X-API-Key": API_KEY}
    shapes = [[Shape("square", 0.5, 0.5, 0.5)], [Shape("disc", 0.5, 0.5, 0.5)]]
    photos, truth = {}, {}
    for i in range(8):
        rgb, gt = demo_photo(W, H, shapes[i % 2], seed=i)
        photos[f"p{i}"], truth[f"p{i}"] = png(rgb), gt
    labels = {n: [shapes[i % 2][0].name] for i, n in enumerate(photos)}
    try:
        r = httpx.post(f"{url}/trainings", headers=ours, timeout=120, data={
            "name": "m", "stages": "seam", "recipe": '{"backbone": "resnet38_small", "epochs": 1, "crop": 64, '
                                                    '"batch_size": 4}', "heldout_fraction": "0"},
            files={"archive": ("data.zip", archive_of(photos, labels), "application/zip")})
        assert r.status_code == 202, r.text
        base = wait_training(url, r.json()["id"])
        assert base["state"] == "succeeded" and base["model"] == "m:1", base
        # /setup (called by Connect Model) answers for SEAM_LABELSTUDIO_MODEL=m: wait until the API's
        # next look at the repository serves it (a busy machine takes longer than the 1 s poll)
        wait_until(lambda: any(m["name"] == "m" and m["serving"] == 1
                               for m in httpx.get(f"{url}/models", headers=ours).json()["repository"]),
                   timeout=60, what="the API to serve m:1")
        with ls.api(LEGACY_TOKEN) as api:
            project = api.post("/api/projects", json={"title": "fit", "label_config": docs_label_config()}).json()["id"]
            r = api.post(f"/api/projects/{project}/import",
                         files=[(f"{n}.png", (f"{n}.png", d, "image/png")) for n, d in photos.items()])
            assert r.status_code == 201, r.text
            tasks = sorted(api.get("/api/tasks", params={"project": project}).json()["tasks"], key=lambda t: t["id"])
            r = api.post("/api/ml", json={"project": project, "title": "seam-wsss", "url": f"{url}/labelstudio",
                                          "auth_method": "BASIC_AUTH", "basic_auth_user": "seam",
                                          "basic_auth_pass": API_KEY, "is_interactive": False})
            assert r.status_code == 201 and r.json()["state"] == "CO", r.text
            wait_until(lambda: authorised_hooks(api, project), timeout=30, what="seam's auth on the webhook")
            for i, t in enumerate(tasks[:2]):  # correct two tasks with the ground truth
                name = re.sub(r"^.*?-", "", Path(t["data"]["image"]).stem)
                cls = labels[name][0]
                r = api.post(f"/api/tasks/{t['id']}/annotations/",
                             json={"result": [brush(truth[name] > 0, cls.capitalize())]})
                assert r.status_code == 201, r.text
                wait_until(lambda i=i: httpx.get(f"{url}/corrections/labelstudio/{project}", headers=ours).json()[
                    "corrections"] == i + 1, timeout=60, what="the correction to arrive through the webhook")
            r = httpx.post(f"{url}/corrections/labelstudio/{project}/sync", headers=ours, timeout=120)
            assert r.status_code == 200 and r.json()["images"] == 8, r.text
            r = httpx.post(f"{url}/corrections/labelstudio/{project}/fit", headers=ours, timeout=300, json={
                "name": "m", "base_model": "m:1", "epochs": 1, "batch_size": 4, "heldout_fraction": 0.0,
                "budget_s": 240})
            assert r.status_code == 202, r.text
            fit = r.json()
            assert fit["corrected"] == 2
            done = wait_training(url, fit["training"])
            log = httpx.get(f"{url}/trainings/{fit['training']}/log", headers=ours, timeout=30).text
            assert done["state"] == "succeeded" and done["model"] == "m:2", (done.get("error"), log[-3000:])
            # no held-out corrected images here (heldout_fraction 0): the owner cannot promote without a
            # comparison; an admin forces it, as the docs say
            r = httpx.post(f"{url}/trainings/{fit['training']}/promote", headers={"X-API-Key": ADMIN_KEY},
                           params={"force": "true"}, timeout=60)
            assert r.status_code == 200, r.text

            def predicted_versions() -> set[str] | None:
                r = api.post("/api/dm/actions", params={"id": "retrieve_tasks_predictions", "project": project},
                             json={"selectedItems": {"all": True, "excluded": []}})
                assert r.status_code == 200, r.text
                got = {p["model_version"] for p in api.get("/api/predictions", params={"project": project}).json()}
                return got if any(":m:2:" in v for v in got) else None
            got = wait_until(predicted_versions, timeout=60, interval=2.0, what="predictions of m:2")
            assert any(re.fullmatch(r"seam-wsss:m:2:\w+", v) for v in got), got
    finally:
        stop_process(proc)
