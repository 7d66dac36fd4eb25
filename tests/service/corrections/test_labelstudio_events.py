"""Label Studio's events reach the corrections store: the webhook reads the task back from (a fake)
Label Studio, stores its latest annotation (brush RLE decoded, labels mapped back through the
config, Choices as image-level labels); the same event twice changes nothing; update replaces,
delete removes; a re-sync repairs missed events; the project belongs to the key that set it up;
START_TRAINING, the fit route and the threshold submit a training."""
from __future__ import annotations

import io

import numpy as np
from PIL import Image

from tests.service.corrections.helpers import (
    CONFIG,
    KEY_A,
    KEY_B,
    block,
    brush,
    choices,
    event,
    wait_for,
)

H, W = 24, 40


def hdr(key: str = KEY_A) -> dict:
    return {"X-API-Key": key}


def setup_project(client, key: str = KEY_A) -> None:
    r = client.post("/labelstudio/setup", headers=hdr(key), json={"project": "1.1767225600", "schema": CONFIG})
    assert r.status_code == 200, r.text
    wait_for(lambda: client.get("/corrections/labelstudio/1", headers=hdr(key)).status_code == 200)


def item(client, image_id: str, key: str = KEY_A) -> dict | None:
    r = client.get("/corrections/labelstudio/1", headers=hdr(key))
    assert r.status_code == 200, r.text
    return next((it for it in r.json()["items"] if it["image_id"] == image_id), None)


def stored_mask(client, tmp_path, image_id: str) -> np.ndarray:
    from seam.service.corrections.store import CorrectionStore

    p = CorrectionStore(tmp_path / "data").project("labelstudio", "1")
    return np.array(Image.open(io.BytesIO(p.path(p.item(image_id)["mask"]).read_bytes())))


def last_event(client) -> dict | None:
    return client.get("/corrections/labelstudio/1", headers=hdr()).json()["last_event"]


def send(client, body: dict, key: str = KEY_A) -> dict:
    before = last_event(client)
    r = client.post("/labelstudio/webhook", headers=hdr(key), json=body)
    assert r.status_code == 201, r.text
    return wait_for(lambda: (e := last_event(client)) != before and e)


def test_an_annotation_reaches_the_store_and_the_same_event_twice_changes_nothing(client, project, tmp_path) -> None:
    setup_project(client)
    project.add_task(1, H, W)
    red, blue = block(H, W, 2, 10, 3, 20), block(H, W, 12, 20, 22, 38)
    ann = project.annotate(1, [brush(red, "Red thing"), brush(blue, "Blue thing", "r2"), choices("Red thing")])
    ev = send(client, event("ANNOTATION_CREATED", ann))
    assert ev["changes"] == ["created"] and ev["error"] is None
    it = item(client, "task-1")
    assert it["corrected"] and it["labels"] == ["blue", "red"]  # the Choices plus what the mask shows
    assert (it["width"], it["height"]) == (W, H)
    want = np.zeros((H, W), np.uint8)
    want[red], want[blue] = 1, 3
    np.testing.assert_array_equal(stored_mask(client, tmp_path, "task-1"), want)
    files = sorted(p.name for p in (tmp_path / "data" / "corrections" / "labelstudio-1").rglob("*") if p.is_file())
    assert send(client, event("ANNOTATION_CREATED", ann))["changes"] == ["unchanged"]
    assert sorted(p.name for p in (tmp_path / "data" / "corrections" / "labelstudio-1").rglob("*")
                  if p.is_file()) == files
    summary = client.get("/corrections", headers=hdr()).json()["projects"]
    assert [(s["project"], s["corrections"], s["changes_since_fit"]) for s in summary] == [("1", 1, 1)]


def test_update_replaces_and_delete_removes(client, project, tmp_path) -> None:
    setup_project(client)
    project.add_task(1, H, W)
    ann = project.annotate(1, [brush(block(H, W, 2, 10, 3, 20), "Red thing")])
    send(client, event("ANNOTATION_CREATED", ann))
    new = block(H, W, 0, 5, 0, 5)
    project.update(1, ann["id"], [brush(new, "Blue thing")])
    assert send(client, event("ANNOTATION_UPDATED", ann))["changes"] == ["updated"]
    assert set(np.unique(stored_mask(client, tmp_path, "task-1"))) == {0, 3}
    assert item(client, "task-1")["labels"] == ["blue"]
    project.delete_annotation(1, ann["id"])
    ev = send(client, {"action": "ANNOTATIONS_DELETED", "project": {"id": 1}, "annotations": [{"id": ann["id"]}]})
    assert ev["changes"] == ["deleted"]
    assert item(client, "task-1")["corrected"] is False  # the image stays for the next fit
    project.delete_task(1)
    assert send(client, {"action": "TASKS_DELETED", "project": {"id": 1}, "tasks": [{"id": 1}]})["changes"] == [
        "absent"]
    assert item(client, "task-1") is None


def test_cancelled_annotations_and_polygons(client, project, tmp_path) -> None:
    setup_project(client)
    project.add_task(1, H, W)
    poly = {"type": "polygonlabels", "from_name": "poly", "to_name": "image", "original_width": W,
            "original_height": H, "value": {"points": [[0, 0], [50, 0], [50, 50], [0, 50]], "polygonlabels": ["Green"]}}
    ann = project.annotate(1, [poly])
    project.annotate(1, [brush(block(H, W, 0, 2, 0, 2), "Red thing")], cancelled=True)  # skipped: cancelled
    send(client, event("ANNOTATION_CREATED", ann))
    m = stored_mask(client, tmp_path, "task-1")
    assert set(np.unique(m)) == {0, 2} and 0.2 < (m == 2).mean() < 0.3  # a quarter of the image, green


def test_bad_annotations_are_reported_and_nothing_is_stored(client, project) -> None:
    setup_project(client)
    project.add_task(1, H, W)
    ann = project.annotate(1, [brush(block(H, W, 2, 10, 3, 20), "Zebra")])
    ev = send(client, event("ANNOTATION_CREATED", ann))
    assert "Zebra" in ev["error"] and "maps to no model class" in ev["error"]
    assert item(client, "task-1") is None
    project.add_task(2, H, W)
    ann = project.annotate(2, [brush(block(H + 2, W, 2, 10, 3, 20), "Red thing")])  # a mask of another size
    ev = send(client, event("ANNOTATION_CREATED", ann))
    assert f"{W}x{H + 2} image but the task's image is {W}x{H}" in ev["error"]
    assert item(client, "task-2") is None


def test_resync_repairs_missed_events(client, project, tmp_path) -> None:
    setup_project(client)
    for t in (1, 2, 3):
        project.add_task(t, H, W, seed=t)
    a1 = project.annotate(1, [brush(block(H, W, 2, 10, 3, 20), "Red thing")])
    send(client, event("ANNOTATION_CREATED", a1))
    project.annotate(2, [brush(block(H, W, 5, 9, 5, 9), "Blue thing")])  # its event was lost
    project.delete_annotation(1, a1["id"])  # so was this one
    r = client.post("/corrections/labelstudio/1/sync", headers=hdr())
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["synced"]["created"] == 2 and body["synced"]["deleted"] == 1  # task 2 corrected; task 3 cached
    assert body["corrections"] == 1 and body["images"] == 3
    project.annotate(3, [brush(block(H, W, 0, 4, 0, 4), "Zebra")])  # one bad task does not stop the others
    project.delete_task(2)
    body = client.post("/corrections/labelstudio/1/sync", headers=hdr()).json()
    assert body["synced"]["failed"] == 1 and body["synced"]["deleted"] == 1 and body["corrections"] == 0
    again = client.post("/corrections/labelstudio/1/sync", headers=hdr()).json()["synced"]
    assert again["created"] == again["updated"] == again["deleted"] == 0


def test_the_project_belongs_to_the_key_that_set_it_up(client, project) -> None:
    setup_project(client, KEY_A)
    project.add_task(1, H, W)
    ann = project.annotate(1, [brush(block(H, W, 2, 10, 3, 20), "Red thing")])
    r = client.post("/labelstudio/webhook", headers=hdr(KEY_B), json=event("ANNOTATION_CREATED", ann))
    assert r.status_code == 403 and "another API key" in r.json()["error"]["message"]
    assert client.get("/corrections/labelstudio/1", headers=hdr(KEY_B)).status_code == 404
    assert client.post("/corrections/labelstudio/1/sync", headers=hdr(KEY_B)).status_code == 404
    assert client.post("/corrections/labelstudio/1/fit", headers=hdr(KEY_B)).status_code == 404
    assert client.get("/corrections", headers=hdr(KEY_B)).json()["projects"] == []
    r = client.post("/labelstudio/webhook", json=event("ANNOTATION_CREATED", ann))  # no key at all
    assert r.status_code == 401


def test_unknown_events_and_malformed_projects(client) -> None:
    r = client.post("/labelstudio/webhook", headers=hdr(), json={"action": "PROJECT_UPDATED", "project": {"id": 1}})
    assert r.status_code == 200 and r.json() == {"status": "Unknown event"}
    r = client.post("/labelstudio/webhook", headers=hdr(), json={"action": "ANNOTATION_CREATED", "project": "x/../y"})
    assert r.status_code == 422 and "project id" in r.json()["error"]["message"]


def test_start_training_and_the_fit_route_submit_a_training(client, project, submitter, tmp_path) -> None:
    setup_project(client)
    project.add_task(1, H, W, seed=1)
    project.add_task(2, H, W, seed=2)
    ann = project.annotate(1, [brush(block(H, W, 2, 10, 3, 20), "Blue thing")])
    send(client, event("ANNOTATION_CREATED", ann))
    assert client.post("/corrections/labelstudio/1/sync", headers=hdr()).status_code == 200
    r = client.post("/labelstudio/webhook", headers=hdr(), json={"action": "START_TRAINING", "project": {"id": 1}})
    assert r.status_code == 201, r.text
    fit = r.json()["result"]
    assert (fit["images"], fit["corrected"], fit["pseudo"]) == (2, 1, 1) and fit["training"] == "training-1"
    spec, owner = submitter.calls[0]
    assert spec["stages"] == "deeplab" and spec["classes"] == ["red", "green", "blue"] and spec["promote"] is True
    from pathlib import Path

    pseudo = Path(spec["pseudo_labels_dir"])
    assert set(np.unique(np.array(Image.open(pseudo / "task-1.png")))) == {0, 3}  # the correction, not the model's
    assert (Path(spec["data"]["root"]) / "SegmentationClass" / "task-1.png").exists()
    assert not (Path(spec["data"]["root"]) / "SegmentationClass" / "task-2.png").exists()
    r = client.post("/corrections/labelstudio/1/fit", headers=hdr(), json={"epochs": 2, "budget_s": 30})
    assert r.status_code == 202 and submitter.calls[1][0]["recipe"]["epochs"] == 2
    detail = client.get("/corrections/labelstudio/1", headers=hdr()).json()
    assert [f["training"] for f in detail["fits"]] == ["training-1", "training-2"]
    assert detail["changes_since_fit"] == 0


def test_a_threshold_of_new_corrections_starts_a_fit(client, project, submitter) -> None:
    from seam.service.integrations.corrections_fit import CorrectionsSettings

    client.app.state.corrections_settings = CorrectionsSettings(fit_every=2, webhook_wait_s=0)
    setup_project(client)
    for t in (1, 2):
        project.add_task(t, H, W, seed=t)
    a1 = project.annotate(1, [brush(block(H, W, 2, 10, 3, 20), "Red thing")])
    send(client, event("ANNOTATION_CREATED", a1))
    assert submitter.calls == []
    a2 = project.annotate(2, [brush(block(H, W, 2, 10, 3, 20), "Blue thing")])
    send(client, event("ANNOTATION_CREATED", a2))
    wait_for(lambda: len(submitter.calls) == 1)
    assert client.get("/corrections/labelstudio/1", headers=hdr()).json()["fits"][0]["reason"] == "2 new corrections"


def test_a_fit_is_a_training_of_the_training_service(client, project) -> None:
    """Without a stand-in submitter the fit goes to the app's training service (POST /trainings'
    store and trainers): the training is the caller's, with the fit's spec."""
    client.app.state.submit_training = None
    setup_project(client)
    project.add_task(1, H, W, seed=1)
    ann = project.annotate(1, [brush(block(H, W, 2, 10, 3, 20), "Blue thing")])
    send(client, event("ANNOTATION_CREATED", ann))
    r = client.post("/corrections/labelstudio/1/fit", headers=hdr(), json={"base_model": "fake:1"})
    assert r.status_code == 202, r.text
    tid = r.json()["training"]
    r = client.get(f"/trainings/{tid}", headers=hdr())
    assert r.status_code == 200, r.text
    assert r.json()["stages"] == "deeplab" and r.json()["source"] == "corrections"
    assert client.get(f"/trainings/{tid}", headers=hdr(KEY_B)).status_code == 404


def test_weak_labels_of_uncorrected_tasks_pseudo_label_them_in_a_fit(client, project, fake_ls, submitter) -> None:
    """With SEAM_LABELSTUDIO_LABELS_FIELD the task's weak labels are kept with its image and the fit
    pseudo-labels it with them (its labels.csv row is the weak labels)."""
    from pathlib import Path

    from seam.service.integrations.ls_settings import LabelStudioSettings

    from tests.service.integrations.helpers import LS_TOKEN

    client.app.state.labelstudio_settings = LabelStudioSettings(url=fake_ls.url, api_key=LS_TOKEN, allow_private=True,
                                                                labels_field="tags")
    setup_project(client)
    project.add_task(1, H, W, seed=1)
    project.add_task(2, H, W, seed=2)
    project.tasks[2]["data"]["tags"] = ["Blue thing"]  # a label value (class blue); the image shows red only
    project.publish()
    ann = project.annotate(1, [brush(block(H, W, 2, 10, 3, 20), "Blue thing")])
    send(client, event("ANNOTATION_CREATED", ann))
    assert client.post("/corrections/labelstudio/1/sync", headers=hdr()).status_code == 200
    r = client.post("/corrections/labelstudio/1/fit", headers=hdr())
    assert r.status_code == 202, r.text
    root = Path(submitter.calls[0][0]["data"]["root"])
    rows = dict(line.split(",") for line in (root / "labels.csv").read_text().split()[1:])
    assert rows == {"task-1": "blue", "task-2": "blue"}  # the weak label, not what the model would predict
