"""Our encoders against the tools' own code: label_studio_sdk's brush encoder/decoder and
cvat_sdk.masks, on odd sizes, empty/full masks and runs longer than rle-pack's 65536."""
from __future__ import annotations

import numpy as np
import pytest
from cvat_sdk.masks import decode_mask, encode_mask
from label_studio_sdk.converter.brush import decode_rle, mask2rle
from matplotlib.path import Path as MplPath
from scipy import ndimage

from seam.common.labelling import cvat_mask_points, cvat_nuclio_mask, ls_rle_decode, ls_rle_encode, mask_polygons


def masks():
    rng = np.random.default_rng(0)
    yield np.zeros((7, 5), bool)
    yield np.ones((1, 1), bool)
    yield np.ones((257, 259), bool)  # one run of 4 * 66563 > 65536 values
    for h, w in [(1, 9), (3, 5), (17, 31), (23, 37), (101, 77)]:
        for p in (0.05, 0.5, 0.95):
            yield rng.random((h, w)) < p
        m = np.zeros((h, w), bool)
        m[h // 3: h - 1, w // 4: w // 2 + 1] = True
        yield m


@pytest.mark.parametrize("i,mask", list(enumerate(masks())))
def test_ls_rle_is_the_sdks_encoding_and_decodes_pixel_for_pixel(i: int, mask: np.ndarray) -> None:
    ours = ls_rle_encode(mask)
    assert ours == mask2rle(mask.astype(np.uint8) * 255)  # byte for byte
    h, w = mask.shape
    decoded = decode_rle(ours).reshape(h, w, 4)
    assert np.array_equal(decoded[:, :, 3] == 255, mask) and set(np.unique(decoded)) <= {0, 255}
    assert np.array_equal(ls_rle_decode(ours, h, w), mask)


@pytest.mark.parametrize("i,mask", [(i, m) for i, m in enumerate(masks()) if m.any()])
def test_cvat_encodings_decode_with_cvat_sdk(i: int, mask: np.ndarray) -> None:
    h, w = mask.shape
    pts = cvat_mask_points(mask)
    assert pts == encode_mask(mask)
    assert np.array_equal(decode_mask(pts, image_width=w, image_height=h), mask)
    nuc = cvat_nuclio_mask(mask)
    x1, y1, x2, y2 = nuc[-4:]
    crop = np.asarray(nuc[:-4]).reshape(y2 - y1 + 1, x2 - x1 + 1)
    full = np.zeros((h, w), bool)
    full[y1:y2 + 1, x1:x2 + 1] = crop == 255
    assert np.array_equal(full, mask) and set(np.unique(crop)) <= {0, 255}


def test_empty_mask_has_no_cvat_encoding() -> None:
    with pytest.raises(ValueError):
        cvat_mask_points(np.zeros((3, 3), bool))


@pytest.mark.parametrize("seed", range(12))
def test_polygons_rasterise_to_the_filled_components(seed: int) -> None:
    rng = np.random.default_rng(seed)
    h, w = (int(v) for v in rng.integers(1, 41, 2))
    mask = rng.random((h, w)) < 0.45
    if seed % 2:
        mask = ndimage.binary_opening(mask)
    yy, xx = np.mgrid[0:h, 0:w]
    centres = np.stack([xx.ravel() + 0.5, yy.ravel() + 0.5], 1)
    raster = np.zeros(h * w, bool)
    polys = mask_polygons(mask)
    for p in polys:
        assert len(p) >= 4 and np.all(np.diff(np.vstack([p, p[:1]]), axis=0).any(axis=1))
        raster |= MplPath(p).contains_points(centres)
    # 4-connected foreground, so background is 8-connected when filling holes
    assert np.array_equal(raster.reshape(h, w), ndimage.binary_fill_holes(mask, structure=np.ones((3, 3))))
    n4 = ndimage.label(mask)[1]
    assert len(polys) == n4  # one outer contour per 4-connected component
