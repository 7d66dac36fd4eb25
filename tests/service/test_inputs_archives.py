"""Direct tests of content sniffing, image decoding limits and archive extraction."""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest

from service.archives import extract_archive, safe_member_path
from service.core.errors import ApiError
from service.encoding import coco_rle, coco_rle_decode
from service.inputs import decode_image, sniff_archive, sniff_image
from tests.service.fakes import encode, png_bytes, png_header_bomb, rgb_image, tar_bytes, zip_bytes


def test_sniffing_ignores_names():
    a = rgb_image()
    assert sniff_image(encode(a)) == "png" and sniff_image(encode(a, "JPEG")) == "jpeg"
    assert sniff_image(encode(a, "WEBP")) == "webp" and sniff_image(encode(a, "BMP")) == "bmp"
    assert sniff_image(b"<svg xmlns='http://www.w3.org/2000/svg'/>") is None
    assert sniff_archive(zip_bytes({"a": b"x"})) == "zip"
    assert sniff_archive(tar_bytes({"a": b"x"}, "w")) == "tar"
    assert sniff_archive(tar_bytes({"a": b"x"}, "w:xz")) == "tar"
    assert sniff_archive(png_bytes()) is None


def test_pixel_limit_before_decoding():
    with pytest.raises(ApiError) as e:
        decode_image(png_header_bomb(50_000, 50_000), max_pixels=10**8)
    assert e.value.status_code == 413
    with pytest.raises(ApiError) as e:
        decode_image(png_header_bomb(5_000, 5_000), max_pixels=10**7)
    assert e.value.status_code == 413 and "5000x5000" in e.value.message
    assert decode_image(png_bytes(10, 12), 1000).shape == (10, 12, 3)


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


def test_rle_matches_pycocotools():
    mask_api = pytest.importorskip("pycocotools.mask")
    rng = np.random.default_rng(0)
    for _ in range(50):
        h, w = rng.integers(1, 40, 2)
        m = rng.random((h, w)) < rng.random()
        ours = coco_rle(m)
        ref = mask_api.encode(np.asfortranarray(m.astype(np.uint8)))
        assert ours["counts"] == ref["counts"].decode()
        assert np.array_equal(coco_rle_decode(ours), m)
