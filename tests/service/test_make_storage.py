"""SEAM_STORAGE_URL picks where job files live: unset = the data directory exactly as before,
file:///path = the same layout there, s3:// = the object store (no request is made to open it)."""
from seam.service.core.config import Settings
from seam.service.object_storage import ObjectStorage, make_storage
from seam.service.storage import Storage


def test_unset_is_the_data_directory(tmp_path):
    st = make_storage(Settings(data_dir=tmp_path / "d"))
    assert type(st) is Storage and st.root == tmp_path / "d" and st.jobs_root == tmp_path / "d" / "jobs"


def test_file_url_is_that_folder(tmp_path):
    st = make_storage(Settings(data_dir=tmp_path / "d", storage_url=(tmp_path / "shared").as_uri()))
    assert type(st) is Storage and st.root == tmp_path / "shared"


def test_s3_url_is_the_object_store_with_a_local_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "x")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "y")
    st = make_storage(Settings(data_dir=tmp_path / "d", storage_url="s3://my-bucket/seam",
                               s3_endpoint_url="http://127.0.0.1:9", storage_cache_bytes=1234))
    assert isinstance(st, ObjectStorage)
    assert st.blobs.url == "s3://my-bucket/seam" and st.cache.limit == 1234 and st.root == tmp_path / "d"
    assert st.describe() == "s3://my-bucket/seam"


def test_the_local_cache_is_bounded_and_survives_no_restart(tmp_path):
    import os

    from seam.service.object_storage import LocalCache, _drop_dead_caches

    cache = LocalCache(tmp_path / "cache" / str(os.getpid()), limit=250)
    fetched = []
    for i in range(5):
        path = cache.get(f"jobs/x/inputs/{i}.png", lambda i=i: fetched.append(i) or bytes(100))
        assert path.read_bytes() == bytes(100)
    assert cache.total <= 250 and len(list((tmp_path / "cache").rglob("*.png"))) == 2  # the oldest evicted
    cache.get("jobs/x/inputs/4.png", lambda: fetched.append("again") or b"")
    assert "again" not in fetched  # a hit: not fetched twice
    dead = tmp_path / "cache" / "999999999"  # a process that is gone (pid beyond pid_max)
    (dead / "jobs").mkdir(parents=True)
    _drop_dead_caches(tmp_path / "cache")
    assert not dead.exists() and (tmp_path / "cache" / str(os.getpid())).exists()
