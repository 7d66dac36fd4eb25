"""The shared numpy CAM post-processing against hand computations."""
import numpy as np
import pytest

from seam.common.cam import (
    MultiScaleConfig,
    cams_to_label,
    interp_matrix,
    multiscale_cam,
    nonempty_classes,
    normalize_cams,
    predict_classes,
    present_classes,
    release_min_max,
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


def test_release_min_max_by_hand():
    x = np.array([[[-1.0, 0.0], [2.0, 4.0]]], np.float32)
    # clip -> [0,0,2,4]; min 0, max 4; values < 1e-5 zeroed -> 0 stays 0 then (0-0-1e-5)/(4+1e-5)
    got = release_min_max(x)[0]
    expect = (np.array([[0, 0], [2, 4]], np.float64) - 1e-5) / (4 + 1e-5)
    np.testing.assert_allclose(got, expect, rtol=1e-6)
    # the quirk kept for parity: an all-zero map becomes -1 everywhere, a map whose minimum is
    # above 0 gets a strongly negative minimum
    np.testing.assert_allclose(release_min_max(np.zeros((1, 2, 3), np.float32)), -1.0, rtol=1e-6)
    assert release_min_max(np.array([[[2.0, 3.0, 4.0]]], np.float32)).min() < -0.9


def test_normalize_cams_lies_in_unit_range_and_equals_the_release_elsewhere():
    rng = np.random.default_rng(5)
    x = np.concatenate([rng.normal(0.5, 1.0, (3, 17, 23)), np.zeros((1, 17, 23)),
                        2.0 + rng.random((1, 17, 23))]).astype(np.float32)
    got, release = normalize_cams(x), release_min_max(x)
    assert got.min() >= 0.0 and got.max() <= 1.0
    assert release.min() < -0.5  # what the old output did
    inside = release >= 0
    np.testing.assert_array_equal(got[inside], release[inside])
    assert not got[3].any()  # the all-zero map stays zero, not -1
    for thr in (0.0, 0.26, 0.5):  # label maps are unchanged at every threshold
        np.testing.assert_array_equal(cams_to_label(got, [0, 1, 2, 3, 4], thr),
                                      cams_to_label(release, [0, 1, 2, 3, 4], thr))


def test_predict_classes_is_score_at_least_threshold():
    scores = np.array([0.1, 0.4, 0.39999, 0.9], np.float32)
    assert predict_classes(scores, 0.4) == [1, 3]
    assert predict_classes(scores, 0.5) == [3]
    assert predict_classes(scores, 0.0) == [0, 1, 2, 3]
    assert predict_classes(scores, 1.01) == []


def test_nonempty_and_present_classes():
    cams = np.zeros((3, 4, 5), np.float32)
    cams[0, 1, 1] = 0.3
    cams[2] = 1.0
    assert nonempty_classes([2, 5, 7], cams) == [2, 7]
    assert nonempty_classes([], np.zeros((0, 4, 5), np.float32)) == []
    label = cams_to_label(cams, [2, 5, 7], threshold=0.5)
    assert present_classes(label, [2, 5, 7]) == [7]  # class 2's only pixel is under the threshold
    assert present_classes(np.zeros((2, 2), np.uint8), [0, 1]) == []


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


def _zero_class_runner(batch: np.ndarray):
    """Class 1 (fg index 1) scores high but its map is <= 0 everywhere."""
    cam, rv = _toy_runner(batch)
    cam[:, 2] = -1.0
    rv[:, 2] = -1.0
    return cam, rv


def test_predicted_class_with_an_empty_map_is_not_present():
    rgb = (np.random.default_rng(4).random((20, 24, 3)) * 255).astype(np.uint8)
    cfg = MultiScaleConfig(scales=(1.0,), cls_threshold=0.0)
    res = multiscale_cam(rgb, _zero_class_runner, labels=None, config=cfg)
    assert 1 not in res.classes and res.classes == [0, 2, 3]
    assert res.cams.shape == (3, 20, 24) and res.cams.min() >= 0 and res.cams.max() <= 1
    # asked for by name, the class keeps its (all-zero, in-range) map
    asked = multiscale_cam(rgb, _zero_class_runner, labels=[1, 2], config=cfg)
    assert asked.classes == [1, 2] and not asked.cams[0].any() and asked.cams.min() >= 0
    # the release's files keep its values: -1 for the empty map (seam cam parity)
    np.testing.assert_allclose(asked.as_dict()[1], -1.0, rtol=1e-6)


def test_as_dict_keeps_release_values_after_resizing():
    rgb = (np.random.default_rng(6).random((20, 24, 3)) * 255).astype(np.uint8)
    res = multiscale_cam(rgb, _toy_runner, labels=[0, 2], config=MultiScaleConfig(scales=(1.0,)))
    d = res.as_dict()
    np.testing.assert_array_equal(np.stack([d[0], d[2]]), release_min_max(res.raw))
    big = res.at_size((40, 48))
    np.testing.assert_allclose(np.stack(list(big.as_dict().values())),
                               release_min_max(resize_bilinear(res.raw, (40, 48))), atol=1e-6)
