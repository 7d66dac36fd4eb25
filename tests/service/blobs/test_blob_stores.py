"""Both blob stores, one contract: the folder (file://) and a real S3-compatible server
(SeaweedFS, tests/conftest.py s3_server): put/get/stream, atomic replace, sorted recursive
listing, children, deletion, missing keys, keys that would leave the root."""
import threading

import pytest
from seam.service.blobs.base import BlobNotFound, parse_s3_url
from seam.service.blobs.stores import open_blob_store

pytestmark = pytest.mark.slow


@pytest.fixture(params=["file", "s3"])
def store(request, tmp_path, monkeypatch):
    if request.param == "file":
        return open_blob_store((tmp_path / "store").as_uri())
    server = request.getfixturevalue("s3_server")
    for k, v in server.env().items():  # the standard AWS variables, as a deployment sets them
        monkeypatch.setenv(k, v)
    bucket = server.create_bucket()
    return open_blob_store(f"s3://{bucket}/some/prefix")


def test_put_get_list_children_delete(store):
    store.put("jobs/a/job.json", b"{}")
    store.put("jobs/a/outputs/png/x.png", b"png1")
    store.put("jobs/a/outputs/png/sub/y.png", b"png2")
    store.put("jobs/b/job.json", b"{}")
    assert store.get("jobs/a/outputs/png/x.png") == b"png1"
    assert [i.key for i in store.list("jobs/a/")] == [
        "jobs/a/job.json", "jobs/a/outputs/png/sub/y.png", "jobs/a/outputs/png/x.png"]
    assert [i.size for i in store.list("jobs/a/outputs/png/x")] == [4]
    assert sorted(store.children("jobs/")) == ["a", "b"]
    assert store.exists("jobs/b/job.json") and not store.exists("jobs/b/nothing")
    assert store.delete_prefix("jobs/a/") == 3
    assert [i.key for i in store.list("jobs/")] == ["jobs/b/job.json"]
    store.delete("jobs/b/job.json")
    store.delete("jobs/b/job.json")  # deleting twice is no error
    assert list(store.list("")) == []


def test_missing_objects_are_blob_not_found(store):
    with pytest.raises(BlobNotFound):
        store.get("nope")
    with pytest.raises(FileNotFoundError):  # callers written for files keep working
        list(store.iter_bytes("nope/deeper"))


def test_streamed_write_and_read_of_a_multipart_object(store):
    block = bytes(range(256)) * 4096  # 1 MiB
    store.put_stream("big.bin", (block for _ in range(12)))  # 12 MiB: a multipart upload on S3
    got = b"".join(store.iter_bytes("big.bin", chunk_size=1 << 20))
    assert len(got) == 12 << 20 and got[:1024] == block[:1024]


def test_replace_is_atomic_for_concurrent_readers(store):
    old, new = b"a" * 300_000, b"b" * 300_000
    store.put("obj", old)
    seen = set()

    def read():
        for _ in range(20):
            seen.add(store.get("obj"))

    t = threading.Thread(target=read)
    t.start()
    for _ in range(5):
        store.put("obj", new)
        store.put("obj", old)
    t.join()
    assert seen <= {old, new}  # never a torn mix


@pytest.mark.parametrize("key", ["../x", "a/../../x", "/abs", "a//b", "a/./b", "", "a\\b"])
def test_keys_cannot_leave_the_root(store, key):
    with pytest.raises(ValueError):
        store.put(key, b"x")


def test_uri_names_the_object(store):
    assert store.uri("jobs/a").endswith("/jobs/a")
    assert store.uri("jobs/a").startswith(("s3://", "file://"))


def test_s3_urls_parsed_and_refused():
    assert parse_s3_url("s3://my-bucket/a/b").prefix == "a/b/"
    assert parse_s3_url("s3://my-bucket").prefix == ""
    for bad in ("s3://UPPER/x", "s3://ab/x", "s3://b@host/x", "s3://bucket/../x", "http://bucket/x",
                "s3://bucket/x?versionId=1"):
        with pytest.raises(ValueError):
            parse_s3_url(bad)


def test_unknown_scheme_refused():
    with pytest.raises(ValueError, match="unsupported storage URL"):
        open_blob_store("ftp://host/x")


def test_any_sees_objects_not_empty_folders(store):
    store.put("jobs/a/x", b"1")
    assert store.any("jobs/a/") and not store.any("jobs/b/")
    store.delete("jobs/a/x")
    assert not store.any("jobs/a/")  # SeaweedFS keeps the folder: it holds nothing


def test_one_s3_client_per_endpoint_and_credentials(monkeypatch):
    from seam.service.blobs.s3 import s3_client

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "k1")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s1")
    a = s3_client("http://127.0.0.1:1")
    assert s3_client("http://127.0.0.1:1") is a  # readers and stores share it: one pool
    assert s3_client("http://127.0.0.1:2") is not a
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "k2")  # rotated credentials: a new client with them
    b = s3_client("http://127.0.0.1:1")
    assert b is not a and b._request_signer._credentials.access_key == "k2"
