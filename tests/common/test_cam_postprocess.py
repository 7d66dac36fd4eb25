"""The shared numpy CAM post-processing against hand computations."""
import numpy as np
import pytest

from seam.common.cam import (
    MultiScaleConfig,
    cams_to_label,
    interp_matrix,
    multiscale_cam,
    normalize_cams,
    resize_bilinear,
    stride_size,
)


def _bilinear_loop(img: np.ndarray, oh: int, ow: int, align_corners: bool) -> np.ndarray:
    """Pixel-by-pixel bilinear resize written from the definition."""
    h, w = img.shape
    out = np.zeros((oh, ow))
    for i in range(oh):
        for j in range(ow):
            if align_corners:
                y = i * (h - 1) / (oh - 1) if oh > 1 else 0.0
                x = j * (w - 1) / (ow - 1) if ow > 1 else 0.0
            else:
                y = max((i + 0.5) * h / oh - 0.5, 0.0)
                x = max((j + 0.5) * w / ow - 0.5, 0.0)
            y0, x0 = min(int(y), h - 1), min(int(x), w - 1)
            y1, x1 = min(y0 + 1, h - 1), min(x0 + 1, w - 1)
            dy, dx = y - y0, x - x0
            out[i, j] = ((1 - dy) * (1 - dx) * img[y0, x0] + (1 - dy) * dx * img[y0, x1]
                         + dy * (1 - dx) * img[y1, x0] + dy * dx * img[y1, x1])
    return out


@pytest.mark.parametrize("align_corners", [True, False])
@pytest.mark.parametrize("shape", [(4, 5, 9, 7), (3, 3, 3, 8), (6, 2, 1, 1), (5, 7, 13, 29)])
def test_resize_matches_definition(align_corners, shape):
    h, w, oh, ow = shape
    img = np.random.default_rng(1).random((h, w))
    got = resize_bilinear(img[None], (oh, ow), align_corners)[0]
    np.testing.assert_allclose(got, _bilinear_loop(img, oh, ow, align_corners), atol=1e-5)


def test_interp_rows_sum_to_one():
    for n_in, n_out in [(5, 17), (17, 5), (1, 4), (8, 8)]:
        for ac in (True, False):
            np.testing.assert_allclose(interp_matrix(n_out, n_in, ac).sum(1), 1.0)


def test_normalize_cams_by_hand():
    x = np.array([[[-1.0, 0.0], [2.0, 4.0]]], np.float32)
    # clip -> [0,0,2,4]; min 0, max 4; values < 1e-5 zeroed -> 0 stays 0 then (0-0-1e-5)/(4+1e-5)
    got = normalize_cams(x)[0]
    expect = (np.array([[0, 0], [2, 4]], np.float64) - 1e-5) / (4 + 1e-5)
    np.testing.assert_allclose(got, expect, rtol=1e-6)


def test_cams_to_label_by_hand():
    cams = np.array([[[0.1, 0.5], [0.9, 0.2]], [[0.3, 0.6], [0.1, 0.25]]], np.float32)
    label = cams_to_label(cams, [4, 11], threshold=0.26)
    np.testing.assert_array_equal(label, [[12, 12], [5, 0]])


def test_stride_size_matches_three_stride2_convs():
    for n, expect in [(448, 56), (37, 5), (61, 8), (1, 1), (375, 47)]:
        assert stride_size(n) == expect


def _toy_runner(batch: np.ndarray):
    """Deliberately not flip-equivariant: weights depend on the column."""
    b, _, h, w = batch.shape
    h8, w8 = stride_size(h), stride_size(w)
    pooled = np.stack([resize_bilinear(x, (h8, w8), False) for x in batch])
    ramp = np.linspace(0.2, 1.5, w8)[None, None, None, :]
    cam = np.concatenate([pooled[:, :1] * 0, pooled * ramp, (pooled[:, :1] - pooled[:, 2:3]) * ramp], 1)
    return cam.astype(np.float32), (cam * 1.3 + 0.1).astype(np.float32)


def test_flip_equivariance_of_multiscale_aggregation():
    rgb = (np.random.default_rng(2).random((29, 43, 3)) * 255).astype(np.uint8)
    cfg = MultiScaleConfig(scales=(0.5, 1.0, 1.5), flip=True)
    a = multiscale_cam(rgb, _toy_runner, labels=[0, 2, 3], config=cfg)
    b = multiscale_cam(rgb[:, ::-1].copy(), _toy_runner, labels=[0, 2, 3], config=cfg)
    np.testing.assert_allclose(a.cams, b.cams[:, :, ::-1], atol=1e-4)
    # without flips the toy network is not equivariant, so the test can fail
    cfg1 = MultiScaleConfig(scales=(1.0,), flip=False)
    c = multiscale_cam(rgb, _toy_runner, labels=[0, 2], config=cfg1)
    d = multiscale_cam(rgb[:, ::-1].copy(), _toy_runner, labels=[0, 2], config=cfg1)
    assert np.abs(c.cams - d.cams[:, :, ::-1]).max() > 1e-2


def test_predicted_classes_and_dict_format():
    rgb = (np.random.default_rng(3).random((20, 24, 3)) * 255).astype(np.uint8)
    res = multiscale_cam(rgb, _toy_runner, labels=None, config=MultiScaleConfig(scales=(1.0,), cls_threshold=0.0))
    assert res.classes == list(range(4)) and res.scores.shape == (4,)
    d = res.as_dict()
    assert set(d) == set(res.classes) and all(v.dtype == np.float32 and v.shape == (20, 24) for v in d.values())
    none = multiscale_cam(rgb, _toy_runner, labels=None, config=MultiScaleConfig(scales=(1.0,), cls_threshold=1.01))
    assert none.classes == [] and none.cams.shape == (0, 20, 24)
