"""PNG, COCO RLE, CAM archive and overlay encoders."""
from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from seam.common.classes import VOC_CLASSES
from seam.common.encoders import (
    coco_annotations,
    coco_rle,
    decode_cams_npz,
    encode_cams_npz,
    encode_png_label,
    encode_png_rgb,
    heatmap_overlay,
    jet,
    mask_overlay,
)
from seam.common.palette import voc_palette

mask_api = pytest.importorskip("pycocotools.mask")
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:pycocotools")


def _masks():
    rng = np.random.default_rng(0)
    yield np.zeros((7, 5), bool)
    yield np.ones((7, 5), bool)
    yield np.ones((1, 1), bool)
    yield np.zeros((1, 1), bool)
    m = np.zeros((30, 40), bool)
    m[5:20, 10:33] = True  # long runs: multi-character counts
    yield m
    for _ in range(40):
        h, w = rng.integers(1, 50, 2)
        yield rng.random((h, w)) < rng.random()
    yield rng.random((300, 200)) < 0.5  # large counts and negative deltas


@pytest.mark.parametrize("mask", list(_masks()))
def test_rle_round_trip_through_pycocotools(mask):
    rle = coco_rle(mask)
    assert rle["size"] == list(mask.shape) and isinstance(rle["counts"], str)
    decoded = mask_api.decode(rle)
    np.testing.assert_array_equal(decoded.astype(bool), mask)
    assert int(mask_api.area(rle)) == int(mask.sum())
    ref = mask_api.encode(np.asfortranarray(mask.astype(np.uint8)))
    assert rle["counts"] == ref["counts"].decode()
    # bytes counts, as pycocotools' own objects carry, decode as well
    np.testing.assert_array_equal(mask_api.decode({**rle, "counts": rle["counts"].encode()}).astype(bool), mask)


def test_coco_annotations():
    label = np.zeros((20, 30), np.uint8)
    label[2:8, 3:10] = 15  # person
    label[10:18, 20:29] = 1  # aeroplane
    label[0, :] = 255
    anns = coco_annotations(label, VOC_CLASSES, image_id=7)
    assert [a["category_id"] for a in anns] == [1, 15]
    assert [a["category"] for a in anns] == ["aeroplane", "person"]
    assert len({a["id"] for a in anns}) == 2
    for a in anns:
        m = label == a["category_id"]
        assert a["area"] == int(m.sum()) and a["image_id"] == 7
        np.testing.assert_allclose(mask_api.toBbox(a["segmentation"]), a["bbox"])
    assert anns[1]["bbox"] == [3, 2, 7, 6]
    with pytest.raises(ValueError):
        coco_annotations(np.full((2, 2), 30, np.uint8), VOC_CLASSES, 1)


def test_npz_round_trip():
    rng = np.random.default_rng(1)
    cams = rng.random((3, 11, 13)).astype(np.float32)
    for f16, tol in ((False, 0.0), (True, 1e-3)):
        data = encode_cams_npz([0, 4, 19], cams, dtype="float16" if f16 else "float32",
                               class_names=["aeroplane", "bus", "tvmonitor"])
        classes, out = decode_cams_npz(data)
        assert classes.tolist() == [0, 4, 19] and out.dtype == np.float32 and out.shape == cams.shape
        np.testing.assert_allclose(out, cams, atol=tol, rtol=0)
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            assert z["cams"].dtype == (np.float16 if f16 else np.float32)
            assert z["class_names"].tolist() == ["aeroplane", "bus", "tvmonitor"]
    assert len(encode_cams_npz([0], cams[:1], dtype="float16")) < len(encode_cams_npz([0], cams[:1]))
    empty_classes, empty = decode_cams_npz(encode_cams_npz([], np.zeros((0, 4, 4), np.float32)))
    assert empty_classes.size == 0 and empty.shape == (0, 4, 4)


def test_npz_rejects_bad_input():
    with pytest.raises(ValueError):
        decode_cams_npz(b"not a zip")
    buf = io.BytesIO()
    np.savez(buf, classes=np.array([1]), cams=np.array([{"x": 1}], dtype=object))
    with pytest.raises(ValueError):  # object arrays would need pickle
        decode_cams_npz(buf.getvalue())
    with pytest.raises(ValueError):
        encode_cams_npz([1, 2], np.zeros((1, 3, 3)))


def test_png_label_and_rgb():
    label = np.array([[0, 1, 2], [15, 20, 255]], np.uint8)
    img = Image.open(io.BytesIO(encode_png_label(label)))
    assert img.mode == "P"
    np.testing.assert_array_equal(np.asarray(img), label)
    np.testing.assert_array_equal(np.asarray(img.convert("RGB")), voc_palette()[label])
    with pytest.raises(ValueError):
        encode_png_label(np.array([[256]]))
    rgb = np.random.default_rng(2).integers(0, 256, (5, 6, 3), dtype=np.uint8)
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(encode_png_rgb(rgb)))), rgb)
    with pytest.raises(ValueError):
        encode_png_rgb(rgb.astype(np.float32))


def test_overlays():
    rng = np.random.default_rng(3)
    rgb = rng.integers(0, 256, (9, 12, 3), dtype=np.uint8)
    cam = rng.random((9, 12)).astype(np.float32)
    over = heatmap_overlay(rgb, cam, alpha=0.5)
    assert over.shape == rgb.shape and over.dtype == np.uint8
    np.testing.assert_array_equal(heatmap_overlay(rgb, cam, alpha=0.0), rgb)
    np.testing.assert_array_equal(heatmap_overlay(rgb, cam, alpha=1.0), jet(cam))
    lo, hi = jet(np.array([0.0, 1.0]))
    assert lo[2] > 100 and lo[0] == 0 and hi[0] > 100 and hi[2] == 0  # blue -> red
    label = np.zeros((9, 12), np.uint8)
    label[2:5, 3:7] = 15
    label[0, :] = 255
    m = mask_overlay(rgb, label, alpha=1.0, outline=False)
    np.testing.assert_array_equal(m[label == 255], rgb[label == 255])
    np.testing.assert_array_equal(m[label == 0], rgb[label == 0])
    assert np.all(m[label == 15] == voc_palette()[15])
    with pytest.raises(ValueError):
        mask_overlay(rgb, label[:5])
