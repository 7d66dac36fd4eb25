"""Jobs over data sets where they live, against a real S3-compatible server (SeaweedFS) and real
`seam serve` / `seam worker` processes on the fake engine: an s3:// prefix, JSONL and CSV
manifests with labels, output_url with its results manifest, per-line errors, refused URLs."""
from __future__ import annotations

import io
import json
import zipfile

import httpx
import numpy as np
import pytest
from PIL import Image

from tests.service.fakes import FakeEngine, encode, rgb_image, stack
from tests.support import wait_done

pytestmark = pytest.mark.slow


def _put_images(s3, bucket: str, prefix: str, n: int) -> dict[str, np.ndarray]:
    imgs = {f"im{i:02d}": rgb_image(20 + i % 3, 24 + i % 2, seed=i) for i in range(n)}
    for iid, a in imgs.items():
        s3.put_object(Bucket=bucket, Key=f"{prefix}{iid}.png", Body=encode(a))
    return imgs


def _env(s3_server, data_bucket: str, store_bucket: str, **extra: str) -> dict[str, str]:
    return {**s3_server.env(), "SEAM_STORAGE_URL": f"s3://{store_bucket}/seam", "SEAM_DATASET_BUCKETS": data_bucket,
            **extra}


def _label(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)))


@pytest.mark.parametrize("mode", ["embedded", "celery"])
def test_job_over_an_s3_prefix(tmp_path, redis_ok, s3_server, mode):
    data, store = s3_server.create_bucket(), s3_server.create_bucket()
    s3 = s3_server.client()
    imgs = _put_images(s3, data, "photos/", 11)
    s3.put_object(Bucket=data, Key="photos/notes.txt", Body=b"not an image")  # not listed: no image extension
    with stack(tmp_path, mode, **_env(s3_server, data, store)) as s:
        if mode == "celery":
            s.env["SEAM_DATA_DIR"] = str(tmp_path / "worker-data")
            s.start_worker("w1")
            s.env["SEAM_DATA_DIR"] = str(tmp_path / "data")
        s.start_api()
        with httpx.Client(base_url=s.url, timeout=30) as c:
            r = c.post("/jobs", json={"input_url": f"s3://{data}/photos/", "outputs": ["png", "coco", "cvat"]})
            assert r.status_code == 202, r.text
            done = wait_done(c, r.json()["id"], 90)
            assert (done["state"], done["done"], done["failed"], done["total"]) == ("succeeded", 11, 0, 11), done
            zf = zipfile.ZipFile(io.BytesIO(c.get(f"/jobs/{done['id']}/results").content))
            engine = FakeEngine()
            for iid, a in imgs.items():
                assert np.array_equal(_label(zf.read(f"png/{iid}.png")), engine.segment(a).label), iid
            assert len([n for n in zf.namelist() if n.startswith("png/")]) == 11
            # the whole-job files are merged over every image of the data set (its chunk files)
            coco = json.loads(zf.read("coco.json"))
            per_image = [json.loads(zf.read(f"coco/{iid}.json")) for iid in sorted(imgs)]
            assert [im["file_name"] for im in coco["images"]] == [f"{iid}.png" for iid in sorted(imgs)]
            assert [im["id"] for im in coco["images"]] == [d["image"]["id"] for d in per_image]
            assert len(coco["annotations"]) == sum(len(d["annotations"]) for d in per_image) > 0
            cvat = zipfile.ZipFile(io.BytesIO(zf.read("cvat_segmentation_mask.zip")))
            assert {f"SegmentationClass/{iid}.png" for iid in imgs} <= set(cvat.namelist())


def test_manifest_with_labels_output_url_and_line_errors(tmp_path, redis_ok, s3_server):
    data, store, other = s3_server.create_bucket(), s3_server.create_bucket(), s3_server.create_bucket()
    s3 = s3_server.client()
    imgs = _put_images(s3, data, "set/", 6)
    s3.put_object(Bucket=other, Key="x.png", Body=encode(rgb_image(20, 20)))
    lines = [json.dumps({"uri": f"s3://{data}/set/{iid}.png", **({"labels": ["red"]} if i % 2 else {})})
             for i, iid in enumerate(imgs)]
    lines += [
        "{not json",  # 7
        json.dumps({"id": "x"}),  # 8: no uri
        json.dumps({"uri": f"s3://{data}/set/im00.png"}),  # 9: duplicate id im00
        json.dumps({"uri": f"s3://{data}/set/im01.png", "id": "extra", "labels": ["purple"]}),  # 10: unknown class
        json.dumps({"uri": f"s3://{other}/x.png", "id": "elsewhere"}),  # 11: bucket not allowed (fails on the worker)
        json.dumps({"uri": f"s3://{data}/set/missing.png"}),  # 12: no such object
    ]
    s3.put_object(Bucket=data, Key="lists/m.jsonl", Body=("\n".join(lines) + "\n").encode())
    with stack(tmp_path, "celery", **_env(s3_server, data, store, SEAM_CHUNK_SIZE="3")) as s:
        s.start_worker("w1")
        s.start_api()
        with httpx.Client(base_url=s.url, timeout=30) as c:
            r = c.post("/jobs", json={"input_url": f"s3://{data}/lists/m.jsonl", "output_url": f"s3://{data}/out/run1",
                                      "outputs": ["png", "coco", "labelstudio"], "image_url_prefix": "http://x/"})
            assert r.status_code == 202, r.text
            done = wait_done(c, r.json()["id"], 90)
            assert (done["done"], done["failed"], done["total"]) == (6, 6, 12), done
            errors = dict((e["image"], e["error"]) for e in c.get(f"/jobs/{done['id']}").json()["errors"])
            assert "not JSON" in errors["line 7"] and "no image URI" in errors["line 8"]
            assert "duplicate" in errors["line 9"] and "purple" in errors["line 10"]
            assert "SEAM_DATASET_BUCKETS" in errors["elsewhere"] and "missing" in errors["set/missing"]
            first = c.get(f"/jobs/{done['id']}/results").text
            # the job ended but its results manifest is missing (the ending process died before writing
            # it, or a client came in between): the API makes it from the chunks' parts, the same file
            s3.delete_object(Bucket=data, Key="out/run1/results.jsonl")
            assert c.get(f"/jobs/{done['id']}/results").text == first
            results = [json.loads(x) for x in first.splitlines()]
            # the routes that read outputs from the job's own storage say where they went instead
            r = c.get(f"/jobs/{done['id']}/results/png/set/im00")
            assert r.status_code == 404 and f"s3://{data}/out/run1" in r.json()["error"]["message"], r.text
            r = c.get(f"/jobs/{done['id']}/export/labelstudio")
            assert r.status_code == 409 and r.json()["error"]["code"] == "outputs_at_output_url", r.text
    by_id = {r["id"]: r for r in results if r["id"]}
    # no id given: the object's key without extension
    assert sorted(by_id) == sorted([*(f"set/{i}" for i in imgs), "elsewhere", "set/missing"])
    assert sorted(r["line"] for r in results if not r["id"]) == ["line 10", "line 7", "line 8", "line 9"]
    engine = FakeEngine()
    for i, (iid, a) in enumerate(imgs.items()):
        rec = by_id[f"set/{iid}"]
        assert rec["error"] is None and rec["uri"] == f"s3://{data}/set/{iid}.png"
        assert rec["outputs"]["png"] == f"s3://{data}/out/run1/png/set/{iid}.png"
        png = s3.get_object(Bucket=data, Key=f"out/run1/png/set/{iid}.png")["Body"].read()
        want = engine.segment(a, labels=[0] if i % 2 else None)
        assert np.array_equal(_label(png), want.label), iid
        assert rec["classes"] == [FakeEngine().foreground_classes()[k] for k in want.classes]
        assert set(rec["scores"]) <= {"red", "green", "blue"}
    assert by_id["elsewhere"]["error"] and by_id["elsewhere"]["outputs"] == {}

    # the whole-job files beside the outputs (a job under SEAM_MAX_ARCHIVE_MEMBERS images), merged
    # over the images that have outputs, with the COCO ids of their files
    def obj(key: str) -> bytes:
        return s3.get_object(Bucket=data, Key=f"out/run1/{key}")["Body"].read()

    coco = json.loads(obj("coco.json"))
    per_image = {json.loads(obj(f"coco/set/{iid}.json"))["image"]["id"]: iid for iid in imgs}
    assert sorted(im["id"] for im in coco["images"]) == sorted(per_image)
    assert {im["file_name"] for im in coco["images"]} == {f"set/{iid}.png" for iid in imgs}  # the ids' folders kept
    assert [c["name"] for c in coco["categories"]] == FakeEngine().foreground_classes()
    tasks = json.loads(obj("labelstudio_tasks.json"))
    assert sorted(t["data"]["image"] for t in tasks) == sorted(f"http://x/set/{iid}.png" for iid in imgs)
    assert obj("labelmap.txt").startswith(b"# label:color_rgb")
    # the outputs went to output_url, not into the job's storage
    keys = [o["Key"] for p in s3.get_paginator("list_objects_v2").paginate(Bucket=store)
            for o in p.get("Contents", [])]
    assert not [k for k in keys if "/outputs/" in k]


def test_uploaded_csv_manifest(tmp_path, redis_ok, s3_server):
    data, store = s3_server.create_bucket(), s3_server.create_bucket()
    s3 = s3_server.client()
    imgs = _put_images(s3, data, "c/", 4)
    rows = ["uri,id,labels"] + [f"s3://{data}/c/{iid}.png,{iid},red;green" for iid in imgs] + ["s3://,bad,"]
    with stack(tmp_path, "embedded", **_env(s3_server, data, store)) as s:
        s.start_api()
        with httpx.Client(base_url=s.url, timeout=30) as c:
            r = c.post("/jobs", files={"manifest": ("list.csv", "\n".join(rows).encode())})
            assert r.status_code == 202, r.text
            done = wait_done(c, r.json()["id"], 60)
            assert (done["done"], done["failed"], done["total"]) == (4, 1, 5), done
            zf = zipfile.ZipFile(io.BytesIO(c.get(f"/jobs/{done['id']}/results").content))
            for iid, a in imgs.items():
                want = FakeEngine().segment(a, labels=[0, 1]).label
                assert np.array_equal(_label(zf.read(f"png/{iid}.png")), want)


def test_refused_urls_are_4xx(tmp_path, redis_ok, s3_server):
    data, store = s3_server.create_bucket(), s3_server.create_bucket()
    with stack(tmp_path, "embedded", **_env(s3_server, data, store)) as s:
        s.start_api()
        with httpx.Client(base_url=s.url, timeout=30) as c:
            cases = [
                ({"input_url": f"s3://{store}/seam/"}, 403),  # the storage bucket is not a data set
                ({"input_url": f"s3://{data}/no-such.jsonl"}, 422),  # manifest missing
                ({"input_url": "http://127.0.0.1:9/m.jsonl"}, 403),  # no http host allowed
                ({"input_url": "file:///etc/passwd"}, 422),
                ({"input_url": f"s3://{data}/x/", "output_url": "file:///tmp/out"}, 422),
                ({"input_url": f"s3://{data}/x/", "output_url": f"s3://{store}/out/"}, 403),
                ({"input_url": "s3://BAD_bucket/x/"}, 422),
                ({"input_url": ""}, 422),
            ]
            for body, status in cases:
                r = c.post("/jobs", json=body)
                assert r.status_code == status, (body, r.status_code, r.text)
                assert r.json()["error"]["message"], r.text
            assert c.get("/jobs").json()["total"] == 0  # nothing was created
