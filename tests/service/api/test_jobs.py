"""Batch jobs through the API in embedded mode (thread executor), with the fake engine."""
from __future__ import annotations

import io
import json
import os
import time
import zipfile

import numpy as np
import pytest
from PIL import Image

from testkit.processes import wait_until
from tests.service.fakes import (
    FAIL_PIXEL,
    FakeEngine,
    GatedEngine,
    assert_error,
    encode,
    lying_jpeg,
    png_bytes,
    rgb_image,
    tar_bytes,
    tar_with_link,
    zip_bomb,
    zip_bytes,
    zip_lying_sizes,
    zip_with_symlink,
)
from tests.support import wait_done


def submit(client, archive: bytes, name: str = "images.zip", labels: bytes | None = None, **fields):
    files = {"archive": (name, archive, "application/octet-stream")}
    if labels is not None:
        files["labels"] = ("labels.csv", labels, "text/csv")
    return client.post("/jobs", files=files, data=fields)


def images(n: int, prefix: str = "img") -> dict[str, tuple[str, np.ndarray]]:
    return {f"{prefix}{i:03d}": (f"{prefix}{i:03d}.png", rgb_image(24 + i % 5, 32 + i % 7, seed=i)) for i in range(n)}


def results_zip(client, job_id: str) -> zipfile.ZipFile:
    r = client.get(f"/jobs/{job_id}/results")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/zip"
    return zipfile.ZipFile(io.BytesIO(r.content))


def test_zip_job_all_outputs(client):
    imgs = images(10)
    archive = zip_bytes({name: encode(a) for name, a in imgs.values()} | {"readme.txt": b"ignored"})
    # "npy" is the npz output's old name: still accepted, written as npz/
    r = submit(client, archive, outputs="png,npy,coco,overlay", method="cam", threshold="0.3")
    assert r.status_code == 202, r.text
    job = r.json()
    assert job["state"] in ("queued", "running", "succeeded") and job["total"] == 10
    assert r.headers["location"] == f"/jobs/{job['id']}"
    done = wait_done(client, job["id"])
    assert (done["state"], done["done"], done["failed"], done["progress"]) == ("succeeded", 10, 0, 1.0)
    assert done["started_at"] and done["finished_at"] and done["method"] == "cam" and done["threshold"] == 0.3
    zf = results_zip(client, job["id"])
    names = set(zf.namelist())
    engine = FakeEngine()
    for iid, (_fn, a) in imgs.items():
        for member in (f"png/{iid}.png", f"npz/{iid}.npz", f"coco/{iid}.json", f"overlay/{iid}.png"):
            assert member in names
        lab = np.asarray(Image.open(io.BytesIO(zf.read(f"png/{iid}.png"))))
        assert np.array_equal(lab, engine.segment(a, method="cam", threshold=0.3).label)
        z = np.load(io.BytesIO(zf.read(f"npz/{iid}.npz")), allow_pickle=False)
        assert z["cams"].shape[1:] == a.shape[:2]
    coco = json.loads(zf.read("coco.json"))
    assert len(coco["images"]) == 10 and [c["name"] for c in coco["categories"]] == ["red", "green", "blue"]
    assert len({a["id"] for a in coco["annotations"]}) == len(coco["annotations"]) > 0
    assert "labelmap.txt" in names
    assert [e.get("file") for e in json.loads(zf.read("errors.json"))] == ["readme.txt"]  # listed, as skipped
    # one file
    r = client.get(f"/jobs/{job['id']}/results/png/img003")
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    assert r.content == zf.read("png/img003.png")
    assert client.get(f"/jobs/{job['id']}/results/coco/img003.json").json()["image"]["file_name"] == "img003.png"


def test_tar_job_with_labels_member_and_nested_dirs(client):
    a = rgb_image()
    members = {"a/x.png": encode(a), "b/x.jpg": encode(a, "JPEG"), "c.png": encode(a),
               "labels.csv": b"image,labels\na/x.png,blue\nc,green\n"}
    r = submit(client, tar_bytes(members), "imgs.tar.gz")
    assert r.status_code == 202, r.text
    done = wait_done(client, r.json()["id"])
    assert done["state"] == "succeeded" and done["done"] == 3
    zf = results_zip(client, done["id"])
    ax = np.asarray(Image.open(io.BytesIO(zf.read("png/a/x.png"))))
    c = np.asarray(Image.open(io.BytesIO(zf.read("png/c.png"))))
    bx = np.asarray(Image.open(io.BytesIO(zf.read("png/b/x.png"))))
    assert set(np.unique(ax)) <= {0, 3} and set(np.unique(c)) <= {0, 2} and 1 in np.unique(bx)


def test_labels_field_json(client):
    a = rgb_image()
    r = submit(client, zip_bytes({"one.png": encode(a)}), labels=json.dumps({"one.png": ["blue"]}).encode())
    done = wait_done(client, r.json()["id"])
    lab = client.get(f"/jobs/{done['id']}/results/png/one").content
    assert set(np.unique(np.asarray(Image.open(io.BytesIO(lab))))) <= {0, 3}


def test_failing_images_recorded_and_job_continues(client):
    bad = rgb_image()
    bad[0, 0] = FAIL_PIXEL  # the fake engine raises on this image
    members = {"good1.png": png_bytes(), "broken.png": b"\x89PNG\r\n\x1a\n garbage", "notimage.jpg": b"hello",
               "engine_fail.png": encode(bad), "good2.png": png_bytes(seed=3)}
    done = wait_done(client, submit(client, zip_bytes(members)).json()["id"])
    assert done["state"] == "succeeded" and (done["done"], done["failed"]) == (2, 3)
    errors = {e["image"]: e["error"] for e in done["errors"]}
    assert set(errors) == {"broken", "notimage", "engine_fail"}
    assert "fake engine failure" in errors["engine_fail"]
    zf = results_zip(client, done["id"])
    assert {e["image"] for e in json.loads(zf.read("errors.json"))} == set(errors)
    assert sorted(n for n in zf.namelist() if n.startswith("png/")) == ["png/good1.png", "png/good2.png"]


def test_all_images_failing_fails_the_job(client):
    done = wait_done(client, submit(client, zip_bytes({"a.png": b"\x89PNG\r\n\x1a\nxx"})).json()["id"])
    assert done["state"] == "failed" and done["error"]


def test_directory_job(client, allowed_root):
    d = allowed_root / "batch"
    (d / "sub").mkdir(parents=True)
    for i in range(3):
        Image.fromarray(rgb_image(seed=i)).save(d / f"im{i}.png")
    Image.fromarray(rgb_image()).save(d / "sub" / "deep.png")
    os.symlink("/etc/hostname", d / "outside.png")  # a link out of the root is ignored
    r = client.post("/jobs", json={"directory": "batch", "outputs": ["png", "coco"], "labels": {"im0": ["blue"]}})
    assert r.status_code == 202, r.text
    done = wait_done(client, r.json()["id"])
    assert (done["state"], done["total"], done["source"]) == ("succeeded", 3, "directory")
    r = client.post("/jobs", json={"directory": str(d), "recursive": True})
    assert wait_done(client, r.json()["id"])["total"] == 4


@pytest.mark.parametrize("body,status,code,contains", [
    ({"directory": "../"}, 403, "forbidden", "outside"),
    ({"directory": "/etc"}, 403, "forbidden", "outside"),
    ({"directory": "missing"}, 422, "invalid_directory", None),
    ({"directory": "batch", "outputs": ["gif"]}, 422, "validation_error", "outputs"),
    ({"directory": "batch", "outputs": []}, 422, "validation_error", "outputs"),
    ({"directory": "batch", "labels": {"a": ["zebra"]}}, 422, "unknown_class", "zebra"),
    ({"directory": "batch", "surprise": 1}, 422, "validation_error", "surprise"),
    ({}, 422, "validation_error", "directory"),
    ({"directory": "a\x00b"}, 422, None, None),
])
def test_directory_job_refusals(client, allowed_root, body, status, code, contains):
    (allowed_root / "batch").mkdir()
    Image.fromarray(rgb_image()).save(allowed_root / "batch" / "a.png")
    assert_error(client.post("/jobs", json=body), status, code, contains)


def test_directory_jobs_disabled_without_root(make_client):
    c = make_client(allowed_root=None)
    assert_error(c.post("/jobs", json={"directory": "x"}), 403, "forbidden", "SEAM_ALLOWED_ROOT")


@pytest.mark.parametrize("archive,status,code,contains", [
    (zip_bytes({"../evil.png": png_bytes(), "ok.png": png_bytes()}), 422, "invalid_archive", "escapes"),
    (zip_bytes({"/abs/evil.png": png_bytes()}), 422, "invalid_archive", "absolute"),
    (zip_bytes({"C:/win/evil.png": png_bytes()}), 422, "invalid_archive", "absolute"),
    (zip_bytes({"a/../../evil.png": png_bytes()}), 422, "invalid_archive", "escapes"),
    (tar_bytes({"../../evil.png": png_bytes()}), 422, "invalid_archive", "escapes"),
    (tar_bytes({"/etc/evil.png": png_bytes()}, mode="w"), 422, "invalid_archive", "absolute"),
    (zip_with_symlink(), 422, "invalid_archive", "link"),
    (tar_with_link("sym"), 422, "invalid_archive", "symbolic link"),
    (tar_with_link("hard", target="ok.png"), 422, "invalid_archive", "hard link"),
    (zip_bomb(3 << 20), 413, "archive_too_large", "limit"),
    (tar_bytes({"ok.png": png_bytes(), "big.png": b"\x00" * (3 << 20)}), 413, "archive_too_large", None),
    (zip_bytes({"readme.txt": b"no images"}), 422, "invalid_archive", "no images"),
    (zip_bytes({"a.png": png_bytes(), "a.jpg": png_bytes()}), 422, "duplicate_image", None),
    (b"PK\x03\x04 truncated zip", 422, "invalid_archive", None),
    (b"\x1f\x8b\x08\x00 truncated gzip", 422, "invalid_archive", None),
    (b"just some text, not an archive", 415, "unsupported_media_type", "zip or tar"),
    (zip_bytes({"labels.csv": b"image,labels\na,zebra\n", "a.png": png_bytes()}), 422, "unknown_class", "zebra"),
])
def test_hostile_archives(make_client, archive, status, code, contains):
    c = make_client(max_archive_bytes=2 << 20)
    err = assert_error(submit(c, archive), status, code, contains)
    assert err["message"]
    assert c.get("/jobs").json()["total"] == 0  # nothing created
    data_jobs = c.app.state.storage.jobs_root
    assert not any(data_jobs.iterdir()), "refused upload left files behind"
    assert submit(c, zip_bytes({"fine.png": png_bytes()})).status_code == 202  # still serving


def test_lying_zip_header_refused(make_client):
    c = make_client(max_archive_bytes=1 << 20)
    r = submit(c, zip_lying_sizes(4 << 20, declared=100))
    assert_error(r, 422, "invalid_archive", "liar.png")  # zipfile reads no more than declared: the CRC fails


def test_zip_bomb_declared_size_checked_before_extraction(make_client, tmp_path):
    c = make_client(max_archive_bytes=1 << 20)
    assert_error(submit(c, zip_bomb(50 << 20)), 413, "archive_too_large")


def test_member_count_limit(make_client):
    c = make_client(max_archive_members=3)
    r = submit(c, zip_bytes({f"{i}.png": png_bytes(8, 8) for i in range(5)}))
    assert_error(r, 413, "archive_too_large", "more than 3")


def test_job_upload_size_limit(make_client):
    c = make_client(max_job_upload_mb=0.01)
    assert_error(submit(c, zip_bytes({f"{i}.png": png_bytes(seed=i) for i in range(10)}, zipfile.ZIP_STORED)),
                 413, "too_large")


def test_job_form_errors(client):
    assert_error(client.post("/jobs", data={"method": "cam"}), 422, None, "archive")
    assert_error(client.post("/jobs", files={"archive": ("a.zip", zip_bytes({"a.png": png_bytes()}))},
                             data={"outputs": "png,gif"}), 422, "validation_error", "outputs")
    assert_error(client.post("/jobs", files={"archive": ("a.zip", zip_bytes({"a.png": png_bytes()}))},
                             data={"threshold": "2"}), 422, "validation_error", "threshold")
    assert_error(client.post("/jobs", files={"archive": ("a.zip", zip_bytes({"a.png": png_bytes()}))},
                             data={"method": "deeplab"}), 422, "method_unavailable")
    assert_error(client.post("/jobs", files={"archive": ("a.zip", zip_bytes({"a.png": png_bytes()})),
                                             "labels": ("l.npy", b"\x93NUMPY\x01\x00pickled")}),
                 422, "invalid_labels", "pickle")
    assert_error(client.post("/jobs", content=b"x", headers={"content-type": "text/plain"}), 415)
    assert_error(client.post("/jobs", content=b"{not json", headers={"content-type": "application/json"}), 422)


def test_cancel_running_job_and_results_conflict(make_client):
    engine = GatedEngine()
    c = make_client(engine=engine, warmup=False, chunk_size=2)
    executor = c.app.state.dispatcher
    handled: list[int] = []  # chunks the executor is done with
    run_chunk = executor.run_chunk
    executor.run_chunk = lambda job_id, chunk, images: (run_chunk(job_id, chunk, images), handled.append(chunk))
    job = submit(c, zip_bytes({f"{i}.png": png_bytes(8, 8, seed=i) for i in range(8)})).json()
    wait_until(engine.reached.is_set, 20, what="an image of the job reached the engine")
    assert c.get(f"/jobs/{job['id']}").json()["state"] in ("queued", "running")
    assert_error(c.get(f"/jobs/{job['id']}/results"), 409, "job_not_finished")
    r = c.delete(f"/jobs/{job['id']}")
    assert r.status_code == 200 and r.json()["state"] == "cancelled"
    engine.gate.set()
    # the chunk in the engine finishes, the 3 others find the job cancelled
    wait_until(lambda: len(handled) == 4, 20, what=lambda: f"chunks handled: {handled}")
    final = c.get(f"/jobs/{job['id']}").json()
    assert final["state"] == "cancelled" and final["done"] <= 2
    assert c.delete(f"/jobs/{job['id']}").json()["state"] == "cancelled"  # idempotent
    assert c.get(f"/jobs/{job['id']}/results").status_code == 200  # partial results of a cancelled job


def test_queue_full_503(make_client):
    engine = GatedEngine()
    c = make_client(engine=engine, warmup=False, max_active_jobs=2)
    arch = zip_bytes({"a.png": png_bytes(8, 8)})
    assert submit(c, arch).status_code == 202
    assert submit(c, arch).status_code == 202
    r = submit(c, arch)
    assert_error(r, 503, "queue_full")
    assert int(r.headers["retry-after"]) > 0
    engine.gate.set()


def test_list_jobs_paginated(client):
    ids = [submit(client, zip_bytes({"a.png": png_bytes(8, 8)})).json()["id"] for _ in range(5)]
    page = client.get("/jobs", params={"limit": 2}).json()
    assert page["total"] == 5 and len(page["jobs"]) == 2 and page["limit"] == 2
    assert [j["id"] for j in page["jobs"]] == ids[::-1][:2]  # newest first
    page2 = client.get("/jobs", params={"limit": 2, "offset": 4}).json()
    assert [j["id"] for j in page2["jobs"]] == [ids[0]]
    assert_error(client.get("/jobs", params={"limit": 0}), 422)
    assert_error(client.get("/jobs", params={"limit": 1000}), 422)


def test_job_ids_and_result_paths(client):
    job = submit(client, zip_bytes({"a.png": png_bytes(8, 8)})).json()
    wait_done(client, job["id"])
    assert_error(client.get("/jobs/" + "0" * 32), 404, "not_found")
    assert_error(client.get("/jobs/not-a-job"), 422)
    assert client.get("/jobs/..%2F..%2Fetc").status_code in (404, 422)
    for bad in ("..%2F..%2Fjob.json", "../../job.json", "%2Fetc%2Fpasswd", "a/../../../job", "b"):
        r = client.get(f"/jobs/{job['id']}/results/png/{bad}")
        assert r.status_code in (404, 422), (bad, r.status_code)
        assert "root:" not in r.text
    assert_error(client.get(f"/jobs/{job['id']}/results/exe/a"), 422)
    assert client.get(f"/jobs/{job['id']}/results/png/a.png").status_code == 200


def test_job_state_expires(make_client):
    c = make_client(job_ttl_s=60)
    job = submit(c, zip_bytes({"a.png": png_bytes(8, 8)})).json()
    wait_done(c, job["id"])
    store = c.app.state.store
    with store._tx() as db:  # the embedded store is SQLite: as if 60 s had passed
        db.execute("UPDATE jobs SET expires_at = 0 WHERE id = ?", (job["id"],))
    assert_error(c.get(f"/jobs/{job['id']}"), 404)
    assert c.get("/jobs").json()["total"] == 0
    storage = c.app.state.storage
    assert storage.sweep(60, now=time.time() + 61) == [job["id"]]
    assert not storage.job_dir(job["id"]).exists()


def test_job_store_down_is_503_not_500(make_settings, tmp_path):
    from fastapi.testclient import TestClient
    from seam.service.jobs.stores.redis import RedisJobStore
    from seam.service.main import create_app

    dead = RedisJobStore("redis://127.0.0.1:1/0", "seamdead", 3600)  # nothing listens on port 1
    app = create_app(make_settings(), engine=FakeEngine(), store=dead)
    with TestClient(app, raise_server_exceptions=False) as c:
        assert_error(c.get("/jobs"), 503, "unavailable")
        assert_error(submit(c, zip_bytes({"a.png": png_bytes()})), 503, "unavailable")
        r = c.get("/readyz")
        assert r.status_code == 503 and not r.json()["checks"]["job_store"]["ok"]
        assert c.get("/metrics").status_code == 200  # the job gauges are skipped, the rest scraped


def test_job_errors_carry_no_server_paths_and_list_skipped_members(client):
    members = {"a.png": png_bytes(), "b.jpg": b"plain text, not a JPEG", "liar.jpg": lying_jpeg(),
               "notes.txt": b"not an image", "__MACOSX/._a.png": b"junk"}
    done = wait_done(client, submit(client, zip_bytes(members)).json()["id"])
    assert (done["done"], done["failed"]) == (1, 2)
    data_dir = str(client.app.state.settings.data_dir)
    zf = results_zip(client, done["id"])
    for text in (json.dumps(done), zf.read("errors.json").decode(), zf.read("job.json").decode()):
        assert data_dir not in text and "BufferedReader" not in text and "/inputs/" not in text, text
    errors = {e["image"]: e["error"] for e in done["errors"]}
    assert "not a supported image format" in errors["b"]
    assert "6000x6000" in errors["liar"]  # decoded, it would be a 6000x6000 mask of invented grey
    listed = json.loads(zf.read("errors.json"))
    assert {e["image"] for e in listed if "image" in e} == {"b", "liar"}
    skipped = {e["file"]: e["skipped"] for e in listed if "file" in e}
    assert set(skipped) == {"notes.txt", "__MACOSX/._a.png"}
    assert "not an image" in skipped["notes.txt"] and "macOS" in skipped["__MACOSX/._a.png"]
