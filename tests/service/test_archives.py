"""Archive extraction: safe member paths, hidden and non-image members, file/directory conflicts,
names that are not UTF-8, sparse tars and the expansion ratio that caps archive bombs."""
from __future__ import annotations

import io
import struct
import tarfile
import zipfile
from pathlib import Path

import pytest
from seam.service.archives import extract_archive, safe_member_path
from seam.service.core.errors import ApiError

from tests.service.fakes import (
    assert_error,
    png_bytes,
    post_job,
    tar_bytes,
    wait,
    zip_bomb,
    zip_bytes,
)


def test_non_utf8_member_names(app_client, mode):
    c = app_client(mode)
    tar = _tar_latin1("caf\xe9.png", png_bytes(8, 8))
    assert b"caf\xe9.png" in tar  # really not UTF-8 on the wire
    err = assert_error(post_job(c, tar), 422, "invalid_archive", "not valid UTF-8")
    assert "\\udce9" in err["message"]
    assert_error(post_job(c, _zip_flagged_invalid_utf8()), 422, "invalid_archive")
    assert c.app.state.storage.job_ids() == []  # nothing kept
    # a zip without the UTF-8 flag: names are CP437 by the zip spec, always decodable: accepted
    raw = zip_bytes({"cafX.png": png_bytes(8, 8)}, compression=zipfile.ZIP_STORED).replace(b"cafX", b"caf\x82")
    r = post_job(c, raw)
    assert r.status_code == 202, r.text
    job = wait(c, r.json()["id"])
    assert job["state"] == "succeeded"
    zf = zipfile.ZipFile(io.BytesIO(c.get(f"/jobs/{job['id']}/results").content))
    assert "png/café.png" in zf.namelist()
    assert c.delete(f"/jobs/{job['id']}").status_code == 200


# --- disk amplification: sparse tars, archive bombs -----------------------------------------------
def sparse_tar(real_size: int, name: str = "big.png") -> bytes:
    """An old-GNU sparse member: 512 stored bytes standing for `real_size` bytes on disk."""
    info = tarfile.TarInfo(name)
    info.type = tarfile.GNUTYPE_SPARSE
    info.size = 512
    hdr = bytearray(info.tobuf(format=tarfile.GNU_FORMAT))
    hdr[386:398] = b"%011o\x00" % (real_size - 512)
    hdr[398:410] = b"%011o\x00" % 512
    hdr[483:495] = b"%011o\x00" % real_size
    hdr[148:156] = b" " * 8
    hdr[148:156] = b"%06o\x00 " % sum(hdr)
    return bytes(hdr) + b"\x01" * 512 + b"\x00" * 1024


def test_sparse_tar_refused(app_client, mode):
    raw = sparse_tar(300 * 1024 * 1024)
    assert len(raw) < 4096
    with tarfile.open(fileobj=io.BytesIO(raw)) as tf:
        m = tf.getmembers()[0]
    assert m.issparse() and m.size == 300 * 1024 * 1024  # what a naive extraction would write
    c = app_client(mode)
    assert_error(post_job(c, raw), 422, "invalid_archive", "sparse")
    assert c.app.state.storage.job_ids() == []


def test_expansion_ratio_caps_archive_bombs(app_client, tmp_path):
    c = app_client(max_archive_bytes=1 << 40)  # only the ratio stands in the way
    bomb = zip_bomb(20 << 20)
    assert len(bomb) < 200_000
    assert_error(post_job(c, bomb), 413, "archive_too_large", "SEAM_MAX_EXPANSION_RATIO")
    assert c.app.state.storage.job_ids() == []
    used = c.app.state.storage.usage_bytes(max_age_s=0)
    assert used < 2 << 20  # nothing close to the 20 MiB was kept


# --- member names that are not UTF-8 --------------------------------------------------------------
def _tar_latin1(name: str, data: bytes) -> bytes:
    return tar_bytes({name: data}, "w", format=tarfile.USTAR_FORMAT, encoding="latin-1")


def _zip_flagged_invalid_utf8() -> bytes:
    raw = bytearray(zip_bytes({"cafX.png": png_bytes(8, 8)}, compression=zipfile.ZIP_STORED))
    raw[:] = raw.replace(b"cafX.png", b"caf\xe9.png")
    for sig, flag_at in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):  # set the 'names are UTF-8' flag
        i = raw.find(sig)
        flags = struct.unpack_from("<H", raw, i + flag_at)[0] | 0x800
        struct.pack_into("<H", raw, i + flag_at, flags)
    return bytes(raw)


@pytest.mark.parametrize("name,ok", [
    ("a.png", "a.png"), ("./x/./y.png", "x/y.png"), ("dir/", "dir"), ("./", ""), ("a\\b.png", "a/b.png"),
    ("../a.png", None), ("/a.png", None), ("x/../../a.png", None), ("C:\\a.png", None), ("a\x00.png", None),
    ("a\nb.png", None),
])
def test_safe_member_path(name, ok):
    if ok is None:
        with pytest.raises(ApiError):
            safe_member_path(name)
    else:
        assert safe_member_path(name) == ok


def test_extract_skips_hidden_and_non_images(tmp_path: Path):
    arch = zip_bytes({"a.png": png_bytes(), "__MACOSX/._a.png": b"junk", ".hidden.png": png_bytes(),
                      "notes.txt": b"x", "sub/labels.json": b"{}", "sub/b.JPG": png_bytes()})
    ex = extract_archive(io.BytesIO(arch), tmp_path / "in", 100, 10**8)
    assert sorted(ex.images) == ["a.png", "sub/b.JPG"] and ex.labels_file == "sub/labels.json"
    assert sorted(p.relative_to(tmp_path / "in").as_posix() for p in (tmp_path / "in").rglob("*") if p.is_file()) \
        == ["a.png", "sub/b.JPG", "sub/labels.json"]


def test_extract_file_directory_conflict(tmp_path: Path):
    arch = tar_bytes({"a.png": png_bytes(), "a.png/b.png": png_bytes()}, "w")
    with pytest.raises(ApiError) as e:
        extract_archive(io.BytesIO(arch), tmp_path / "in", 100, 10**8)
    assert e.value.status_code == 422
