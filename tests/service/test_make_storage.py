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
