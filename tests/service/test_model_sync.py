"""SEAM_MODELS_URL: a model repository in a real S3 server (SeaweedFS, testkit/s3server.py)
copied into a host's local model directory, a version only once it is complete and verified."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from seam.service.blobs.stores import open_blob_store
from seam.service.model_sync import ModelSync, push_repository, push_version

from seam.modelrepo.versions import list_models, publish_version, resolve, version_digest
from testkit import REPO
from testkit.processes import wait_until

pytestmark = pytest.mark.slow

DEMO = REPO / "models" / "seam-demo"


@pytest.fixture
def source(tmp_path: Path) -> Path:
    """A local repository with the demo as a legacy dir and as versions demo:1 and demo:2."""
    repo = tmp_path / "source"
    repo.mkdir()
    shutil.copytree(DEMO, repo / "seam-demo")
    publish_version(repo, "demo", DEMO)
    publish_version(repo, "demo", DEMO, promote=True)
    return repo


def _store(s3_server, bucket: str, prefix: str = "models"):
    import os

    os.environ.update(s3_server.env())  # the store reads the standard AWS variables, as in deployment
    return open_blob_store(f"s3://{bucket}/{prefix}")


def _hidden(d: Path) -> list[str]:
    return [p.name for p in d.iterdir() if p.name.startswith(".")]


def test_a_repository_in_s3_arrives_complete_and_verified(tmp_path, source, s3_server, s3_bucket, monkeypatch):
    for k, v in s3_server.env().items():
        monkeypatch.setenv(k, v)
    store = _store(s3_server, s3_bucket)
    push_version(store, source / "seam-demo", "seam-demo")
    for n in (1, 2):
        push_version(store, source / "demo" / str(n), f"demo/{n}")
    store.put("demo/PROMOTED", (source / "demo" / "PROMOTED").read_bytes())
    cache = tmp_path / "cache"
    report = ModelSync(store, cache).sync_once()
    assert sorted(report.added) == ["demo/1", "demo/2", "seam-demo"] and not report.waiting
    models = list_models(cache)
    assert set(models) == {"seam-demo", "demo"} and models["demo"].promoted == 2
    for ref in ("demo:1", "demo:2", "seam-demo"):
        assert version_digest(resolve(cache, ref)) == version_digest(resolve(source, ref))
    assert _hidden(cache) == []
    again = ModelSync(store, cache).sync_once()  # nothing new: nothing downloaded
    assert (again.added, again.waiting, again.updated) == ([], {}, [])


def test_half_uploaded_or_corrupt_versions_wait(tmp_path, source, s3_server, s3_bucket, monkeypatch):
    for k, v in s3_server.env().items():
        monkeypatch.setenv(k, v)
    store = _store(s3_server, s3_bucket)
    v1 = source / "demo" / "1"
    store.put("demo/1/manifest.json", (v1 / "manifest.json").read_bytes())  # the manifest before its files
    store.put("demo/PROMOTED", b"1\n")
    cache = tmp_path / "cache"
    sync = ModelSync(store, cache)
    report = sync.sync_once()
    assert "not uploaded yet" in report.waiting["demo/1"]
    assert not (cache / "demo" / "1").exists() and not (cache / "demo" / "PROMOTED").exists()
    store.put("demo/1/model.onnx", b"not the model")  # wrong bytes: refused by the checksum
    store.put("demo/1/pcm.onnx", (v1 / "pcm.onnx").read_bytes())
    report = sync.sync_once()
    assert "sha256" in report.waiting["demo/1"] and not (cache / "demo" / "1").exists()
    assert _hidden(cache) == []
    store.put("demo/1/model.onnx", (v1 / "model.onnx").read_bytes())
    report = sync.sync_once()
    assert report.added == ["demo/1"] and report.updated == ["demo/PROMOTED"]
    assert list_models(cache)["demo"].promoted == 1


def test_new_versions_and_promotions_arrive_in_the_background(tmp_path, source, s3_server, s3_bucket, monkeypatch):
    for k, v in s3_server.env().items():
        monkeypatch.setenv(k, v)
    store = _store(s3_server, s3_bucket, "repo/models")
    push_version(store, source / "demo" / "1", "demo/1")
    cache = tmp_path / "cache"
    sync = ModelSync(store, cache, interval_s=0.2)
    sync.sync_once()
    sync.start()
    try:
        assert list_models(cache)["demo"].promoted == 1
        push_version(store, source / "demo" / "2", "demo/2")
        store.put("demo/PROMOTED", b"2\n")
        wait_until(lambda: list_models(cache)["demo"].promoted == 2, 20, 0.1, "demo:2 promoted on this host")
        assert sync.error is None
    finally:
        sync.stop()


def test_push_repository_then_sync_round_trips_and_skips_what_is_there(tmp_path, source, s3_server, s3_bucket,
                                                                        monkeypatch):
    for k, v in s3_server.env().items():
        monkeypatch.setenv(k, v)
    store = _store(s3_server, s3_bucket)
    assert push_repository(store, source) == ["demo/1", "demo/2", "seam-demo"]
    assert push_repository(store, source) == []
    cache = tmp_path / "cache"
    ModelSync(store, cache).sync_once()
    assert {m: e.promoted for m, e in list_models(cache).items()} == {"seam-demo": 1, "demo": 2}
