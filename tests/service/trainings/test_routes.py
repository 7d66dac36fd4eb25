"""The /trainings routes without training (fast): a recording trainer stands in for the
Celery/embedded ones, so what is checked is the API's side: the training's directory (spec,
owner, the extracted archive), the folder source under the allowed root, refusals with their
codes, ownership, listing, cancel of a waiting training and of a running one, promotion rules."""
from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import pytest
from seam.service import main as service_main
from seam.service.fake_engine import FakeEngine
from seam.service.main import create_app
from seam.service.trainings.runner import EmbeddedTrainers

from seam.modelrepo import versions
from seam.modelrepo.trainings import Evaluation, TrainingStatus, read_spec, write_status
from testkit.versions import BG, publish_variant
from tests.support import entered_clients

USER, OTHER, ADMIN = "user-key-0123456789", "other-key-0123456789", "admin-key-0123456789"


class RecordingTrainers(EmbeddedTrainers):
    """Embedded trainers that start nothing: submissions wait (so cancel finds them waiting)."""

    sent: list[str] = []

    def check_available(self) -> None:
        pass

    def submit(self, tid: str) -> None:
        super().submit(tid)
        RecordingTrainers.sent = list(self.waiting)

    def _fill(self) -> None:
        pass  # nothing starts


@pytest.fixture
def client(make_settings, monkeypatch, allowed_root):
    monkeypatch.setattr(service_main, "_make_trainers", lambda s, store, dispatcher: RecordingTrainers(s, store))
    with entered_clients() as enter:
        c = enter(create_app(make_settings(api_keys=[USER, OTHER], admin_api_keys=[ADMIN],
                                                  max_active_trainings=3), engine=FakeEngine()))
        c.headers["X-API-Key"] = USER
        yield c


def _zip(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for k, v in files.items():
            z.writestr(k, v)
    return buf.getvalue()


def _jpeg() -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (16, 16), (200, 10, 10)).save(buf, "JPEG")
    return buf.getvalue()


ARCHIVE = _zip({"mydata/images/a.jpg": _jpeg(), "mydata/images/b.jpg": _jpeg(),
                "mydata/labels.csv": b"image,labels\na.jpg,cat\nb.jpg,dog;cat\n"})


def _tdir(client, tid: str) -> Path:
    return Path(client.app.state.settings.data_dir) / "trainings" / tid


def test_archive_submission_writes_the_training(client) -> None:
    r = client.post("/trainings", files={"archive": ("d.zip", ARCHIVE)},
                    data={"name": "pets", "classes": "cat,dog", "stages": "seam+rw", "promote": "true",
                          "recipe": json.dumps({"backbone": "resnet38_small", "epochs": 2}), "budget_s": "600"})
    assert r.status_code == 202, r.text
    t = r.json()
    assert t["state"] == "queued" and t["name"] == "pets" and t["budget_s"] == 600 and r.headers["Location"]
    spec = read_spec(_tdir(client, t["id"]))
    assert spec.classes == ["cat", "dog"] and spec.stages == "seam+rw" and spec.promote and spec.recipe.epochs == 2
    assert Path(spec.data.root).name == "mydata" and (Path(spec.data.root) / "labels.csv").is_file()
    assert RecordingTrainers.sent == [t["id"]]
    assert [x["id"] for x in client.get("/trainings").json()["trainings"]] == [t["id"]]
    assert client.get(f"/trainings/{t['id']}", headers={"X-API-Key": OTHER}).status_code == 404
    assert client.get("/trainings", headers={"X-API-Key": OTHER}).json()["trainings"] == []
    # cancel while it waits for a trainer: it never starts
    c = client.post(f"/trainings/{t['id']}/cancel").json()
    assert c["state"] == "cancelled" and list(client.app.state.trainers.waiting) == []
    assert "cancelled" in client.get(f"/trainings/{t['id']}/log").text


def test_folder_source_and_refusals(client, allowed_root: Path) -> None:
    (allowed_root / "set").mkdir()
    r = client.post("/trainings", json={"name": "f", "folder": "set", "recipe": {"epochs": 1}})
    assert r.status_code == 202, r.text
    assert read_spec(_tdir(client, r.json()["id"])).data.root == str((allowed_root / "set").resolve())
    cases = [
        (dict(json={"name": "f", "folder": "/etc"}), 403, "forbidden"),
        (dict(json={"name": "f"}), 422, "validation_error"),
        (dict(json={"name": "f", "folder": "set", "job_id": "0" * 32}), 422, "validation_error"),
        (dict(json={"name": "../f", "folder": "set"}), 422, "validation_error"),
        (dict(json={"name": "f", "folder": "set", "recipe": {"device": "cuda"}}), 422, "validation_error"),
        (dict(json={"name": "f", "folder": "set", "budget_s": 1e9}), 422, "validation_error"),
        (dict(json={"name": "f", "folder": "set", "stages": "deeplab"}), 422, "validation_error"),
        (dict(json={"name": "f", "folder": "set", "base_model": "nope"}), 404, "model_not_found"),
        (dict(json={"name": "f", "job_id": "0" * 32}), 404, "not_found"),
        (dict(files={"archive": ("d.zip", _zip({"a.jpg": _jpeg()}))}, data={"name": "f"}), 422, "invalid_archive"),
        (dict(files={"archive": ("d.zip", b"not an archive")}, data={"name": "f"}), 415, "unsupported_media_type"),
        (dict(data={"name": "f"}, files={"x": ("x", b"1")}), 422, "validation_error"),
        (dict(content=b"x", headers={"Content-Type": "text/plain"}), 415, "unsupported_media_type"),
    ]
    for kw, status, code in cases:
        r = client.post("/trainings", **kw)
        assert (r.status_code, r.json()["error"]["code"]) == (status, code), (kw, r.text)
    # nothing half-made is left behind by the refusals
    assert len(client.get("/trainings").json()["trainings"]) == 1


def test_limits_and_promotion_rules(client, allowed_root: Path, tmp_path: Path) -> None:
    repo = Path(client.app.state.settings.models_dir)
    for _ in (1, 2):
        publish_variant(repo, "f", BG[1], tmp_path)  # f:1 promoted, f:2 not
    (allowed_root / "set").mkdir()
    ids = [client.post("/trainings", json={"name": "f", "folder": "set"}).json()["id"] for _ in range(3)]
    r = client.post("/trainings", json={"name": "f", "folder": "set"})
    assert r.status_code == 503 and r.json()["error"]["code"] == "queue_full"
    assert client.post(f"/trainings/{ids[0]}/promote").json()["error"]["code"] == "training_not_finished"
    # a finished training whose version was worse than the promoted one: 409 unless forced
    st = TrainingStatus(state="succeeded", model="f", version=2,
                        evaluation=Evaluation(split=["a"], new=10.0, promoted=20.0, promoted_ref="f:1",
                                              comparable=True))
    write_status(_tdir(client, ids[1]), st)
    r = client.post(f"/trainings/{ids[1]}/promote")
    assert r.status_code == 409 and r.json()["error"]["code"] == "worse" and "20.0" in r.json()["error"]["message"]
    assert not client.get(f"/trainings/{ids[1]}").json()["promoted"]
    assert client.post(f"/trainings/{ids[1]}/promote", params={"force": "true"}).status_code == 403
    r = client.post(f"/trainings/{ids[1]}/promote", params={"force": "true"}, headers={"X-API-Key": ADMIN})
    assert r.status_code == 200 and r.json()["promoted"] and versions.resolve(repo, "f").version == 2
    assert versions.history(repo, "f")[-1]["note"].endswith("(forced)")
    # a better one compared with f:1, which is no longer the promoted version: 409 unless forced
    st.evaluation = Evaluation(split=["a"], new=30.0, promoted=20.0, promoted_ref="f:1", comparable=True)
    st.version = 1
    write_status(_tdir(client, ids[2]), st)
    assert client.post(f"/trainings/{ids[2]}/promote").json()["error"]["code"] == "promoted_changed"
    st.version = 9
    write_status(_tdir(client, ids[2]), st)
    assert client.post(f"/trainings/{ids[2]}/promote").json()["error"]["code"] == "model_not_found"


def test_job_source(client, allowed_root: Path) -> None:
    """A finished directory job becomes the training's data: links to its images, its labels (or
    the classes its png masks show) in labels.csv, its masks as DeepLab's pseudo labels."""
    from PIL import Image

    from tests.support import shapes_photo, wait_done

    (allowed_root / "photos").mkdir()
    for i in range(3):
        Image.fromarray(shapes_photo(48, 64, seed=i)).save(allowed_root / "photos" / f"p{i}.jpg")
    labels = {"p0.jpg": ["red"], "p1.jpg": ["red", "blue"]}  # p2: no tags, an empty mask -> left out
    r = client.post("/jobs", json={"directory": "photos", "outputs": ["png"], "labels": labels})
    assert r.status_code == 202, r.text
    job = r.json()["id"]
    assert wait_done(client, job)["state"] == "succeeded"
    assert client.post("/trainings", json={"name": "j", "job_id": job},
                       headers={"X-API-Key": OTHER}).status_code == 404  # someone else's job
    r = client.post("/trainings", json={"name": "j", "job_id": job, "stages": "pipeline"})
    assert r.status_code == 202, r.text
    spec = read_spec(_tdir(client, r.json()["id"]))
    root = Path(spec.data.root)
    assert spec.data.source == "job" and spec.data.job_id == job
    rows = (root / "labels.csv").read_text().splitlines()[1:]
    # the job's labels are the tags; p2 (no labels) is kept only when its mask shows a class
    assert sorted(rows)[:2] == ["p0,red", "p1,red;blue"] and len(rows) in (2, 3), rows
    assert all((root / "images" / f"{row.split(',')[0]}.jpg").resolve().is_file() for row in rows)
    assert spec.pseudo_labels_dir == str(root / "pseudo") and len(list((root / "pseudo").iterdir())) == len(rows)
    assert (root / "classes.txt").read_text().splitlines()[0] == "background"
    # a job over a data set (input_url) kept none of its images: a 422 saying so
    storage = client.app.state.storage
    storage.write_manifest(job, {**storage.read_manifest(job), "streamed": True, "images": {},
                                 "input_url": "s3://b/photos/"})
    r = client.post("/trainings", json={"name": "j", "job_id": job})
    assert r.status_code == 422 and "s3://b/photos/" in r.json()["error"]["message"], r.text


def test_job_image_ids_become_distinct_file_names() -> None:
    """A folder job's ids hold '/'; flattened, 'x/y' and an id 'x__y' must not share a file (a
    second symlink would fail the submission)."""
    from seam.service.trainings.submit import _file_name

    used: set[str] = set()
    names = [_file_name(i, used) for i in sorted(["x/y", "x__y", "x__y~2", "plain", "a/b/c"])]
    assert names == ["a__b__c", "plain", "x__y", "x__y~2", "x__y~2~2"]
    assert _file_name("plain", set()) == "plain"  # ids without '/' keep their name
