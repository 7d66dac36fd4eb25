"""SEAM_STORAGE_URL=s3://...: an uploaded job's files live in a real S3-compatible server
(SeaweedFS), not in any process's data directory; the results zip, one output, cancel and the TTL
sweep work the same. Real processes (`seam serve`, `seam worker` on Redis), the fake engine."""
from __future__ import annotations

import io
import zipfile

import httpx
import pytest

from tests.service.fakes import check_results, make_archive, stack
from tests.support import wait_done, wait_until

pytestmark = pytest.mark.slow


def _keys(s3_server, bucket: str, prefix: str) -> list[str]:
    pages = s3_server.client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return [o["Key"] for p in pages for o in p.get("Contents", [])]


def _local_files(root) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()) if root.exists() else []


@pytest.mark.parametrize("mode", ["embedded", "celery"])
def test_upload_job_files_live_in_s3(tmp_path, redis_ok, s3_server, s3_bucket, mode):
    env = {**s3_server.env(), "SEAM_STORAGE_URL": f"s3://{s3_bucket}/seam", "SEAM_STORAGE_CACHE_BYTES": "20000"}
    with stack(tmp_path, mode, **env) as s:
        if mode == "celery":  # the worker has a data directory of its own: nothing shared but Redis and S3
            s.env["SEAM_DATA_DIR"] = str(tmp_path / "worker-data")
            s.start_worker("w1")
            s.env["SEAM_DATA_DIR"] = str(tmp_path / "data")
        s.start_api()
        with httpx.Client(base_url=s.url, timeout=30) as c:
            archive, imgs = make_archive(12)
            r = c.post("/jobs", files={"archive": ("a.zip", archive)})
            assert r.status_code == 202, r.text
            job = r.json()["id"]
            done = wait_done(c, job, 60)
            assert (done["state"], done["done"], done["failed"]) == ("succeeded", 12, 0), done
            keys = _keys(s3_server, s3_bucket, f"seam/jobs/{job}/")
            assert f"seam/jobs/{job}/job.json" in keys
            assert sorted(k for k in keys if "/outputs/png/" in k) == [
                f"seam/jobs/{job}/outputs/png/{i}.png" for i in sorted(imgs)]
            # freed by whoever ended the job, just after recording the end
            wait_until(lambda: not [k for k in _keys(s3_server, s3_bucket, f"seam/jobs/{job}/") if "/inputs/" in k],
                       30, 0.1)
            check_results(c, job, imgs)
            one = c.get(f"/jobs/{job}/results/png/im03")
            assert one.status_code == 200 and one.content[:4] == b"\x89PNG"
            assert c.get(f"/jobs/{job}/results/png/nope").status_code == 404
            names = zipfile.ZipFile(io.BytesIO(c.get(f"/jobs/{job}/results").content)).namelist()
            assert "job.json" in names and "errors.json" in names
        # no job file stayed on a local disk; the cache is bounded (20 kB: a few 2 kB PNGs at most)
        for root in (tmp_path / "data", tmp_path / "worker-data"):
            local = [f for f in _local_files(root) if "/jobs/" in f"/{f}" and not f.startswith("cache/")]
            assert local == [], local
            assert sum(p.stat().st_size for p in (root / "cache").rglob("*") if p.is_file()) <= 40_000


def test_object_storage_sweep_and_delete(tmp_path, s3_server, s3_bucket, monkeypatch):
    from seam.service.blobs.stores import open_blob_store
    from seam.service.object_storage import ObjectStorage

    for k, v in s3_server.env().items():
        monkeypatch.setenv(k, v)
    st = ObjectStorage(open_blob_store(f"s3://{s3_bucket}/p"), tmp_path / "scratch", 1 << 20)
    old, new = "a" * 32, "b" * 32
    for job, created in ((old, 1000.0), (new, 10_000.0)):
        st.inputs_dir(job).mkdir(parents=True)
        (st.inputs_dir(job) / "x.png").write_bytes(b"png")
        st.write_manifest(job, {"id": job, "created_at": created, "images": {"x": "x.png"}})
        st.write_output(job, "png", "x", b"out")
    assert not (tmp_path / "scratch" / "jobs" / old).exists()  # published: the scratch is gone
    assert st.job_ids() == [old, new]
    assert st.input_path(old, st.read_manifest(old), "x").read_bytes() == b"png"
    assert st.read_output(old, "png", "x") == b"out" and st.outputs_complete(old, "x", ["png"])
    assert st.sweep(ttl_s=5000, now=10_500.0) == [old]
    assert st.job_ids() == [new] and _keys(s3_server, s3_bucket, f"p/jobs/{old}/") == []
    assert st.delete_inputs(new) and _keys(s3_server, s3_bucket, f"p/jobs/{new}/inputs/") == []
    st.delete_job(new)
    assert _keys(s3_server, s3_bucket, "p/") == []
