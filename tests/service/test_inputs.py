"""Direct tests of content sniffing and image decoding limits."""
from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image
from seam.service.core.errors import ApiError
from seam.service.inputs import decode_image, sniff_archive, sniff_image

from tests.service.fakes import encode, lying_jpeg, png_bytes, png_header_bomb, rgb_image, tar_bytes, zip_bytes


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


def test_jpeg_decoding_invents_no_pixels(client):
    # Pillow decodes a JPEG whose scans end early by filling the rest with grey (libjpeg only
    # warns): a 120x90 file claiming 6000x6000 came back 200 with a 6000x6000 mask.
    for liar in (lying_jpeg(), lying_jpeg(progressive=True), lying_jpeg(1200, 900)):
        with pytest.raises(ApiError) as e:
            decode_image(liar, max_pixels=10**8)
        assert e.value.status_code == 422 and e.value.code == "invalid_image", e.value.message
        r = client.post("/segment", files={"image": ("a.jpg", liar)})
        assert r.status_code == 422 and "truncated file or lying header" in r.json()["error"]["message"], r.text
    real = encode(rgb_image(90, 120, seed=5), "JPEG")
    with pytest.raises(ApiError) as e:
        decode_image(real[:len(real) // 2], max_pixels=10**8)  # truncated: refused as before
    assert e.value.status_code == 422
    # what real encoders write still decodes: flat colour at quality 1 (the fewest bits per block),
    # progressive, no chroma subsampling, optimised Huffman tables, greyscale
    flat = np.full((600, 800, 3), 40, np.uint8)
    for img, kw in ((flat, {"quality": 1}), (flat, {"quality": 1, "progressive": True}),
                    (flat, {"quality": 1, "optimize": True}), (rgb_image(64, 64), {"subsampling": 0}),
                    (flat[..., 0], {"quality": 1})):
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, "JPEG", **kw)
        assert decode_image(buf.getvalue(), max_pixels=10**8).shape[:2] == img.shape[:2]
    assert client.post("/segment", files={"image": ("a.jpg", real)}).status_code == 200


def test_empty_image_is_422(client):
    r = client.post("/segment", files={"image": ("a.png", b"")})
    assert r.status_code == 422 and r.json()["error"] == {"code": "invalid_image", "message": "the image file is empty"}


def test_heic_photo_is_415_naming_the_format(client):
    pillow_heif = pytest.importorskip("pillow_heif")  # the dev extra installs it
    from testkit.demo import photo

    rgb = np.asarray(Image.open(io.BytesIO(photo(300, 400, seed=2))).convert("RGB"))
    buf = io.BytesIO()
    pillow_heif.from_pillow(Image.fromarray(rgb)).save(buf, quality=80)  # what an iPhone sends
    heic = buf.getvalue()
    for path in ("/segment", "/cam"):
        r = client.post(path, files={"image": ("IMG_0001.HEIC", heic)})
        assert r.status_code == 415 and "HEIC images are not supported" in r.json()["error"]["message"], r.text
    with pytest.raises(ApiError) as e:
        decode_image(heic, 10**8)
    assert e.value.status_code == 415 and "HEIC" in e.value.message
