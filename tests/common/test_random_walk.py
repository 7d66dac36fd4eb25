"""The sparse random walk equals the authors' dense T^(2^logt) on random affinities."""
import numpy as np
import pytest
from scipy import sparse

from seam.common.random_walk import (
    affinity_from_features,
    avg_pool,
    pair_indices,
    pair_offsets,
    pooled_cams,
    propagate,
    random_walk_labels,
    random_walk_scores,
    transition_matrix,
)


def _features(rng, h, w, d=32, regions=5, noise=0.3):
    """Piecewise-constant random embeddings plus noise: affinities high inside regions."""
    yy, xx = np.mgrid[:h, :w]
    centres = rng.uniform(0, [h, w], size=(regions, 2))
    lab = ((yy[..., None] - centres[:, 0]) ** 2 + (xx[..., None] - centres[:, 1]) ** 2).argmin(-1)
    emb = rng.normal(0, 1, (regions, d))
    return (emb[lab] + noise * rng.normal(0, 1, (h, w, d))).transpose(2, 0, 1).astype(np.float32)


def test_offsets_are_the_authors_half_plane():
    offs = pair_offsets(5)
    assert len(offs) == 34
    assert offs[:4] == ((0, 1), (0, 2), (0, 3), (0, 4))
    assert all(dy > 0 or (dy == 0 and dx > 0) for dy, dx in offs)
    assert all(dy * dy + dx * dx < 25 for dy, dx in offs)
    # with the mirrored half, every nonzero offset within the disc exactly once
    full = set(offs) | {(-dy, -dx) for dy, dx in offs}
    assert full == {(dy, dx) for dy in range(-4, 5) for dx in range(-4, 5) if 0 < dy * dy + dx * dx < 25}


def test_pair_indices_match_the_release_crop():
    h, w, r = 9, 12, 5
    frm, to = pair_indices(h, w, r)
    grid = np.arange(h * w).reshape(h, w)
    src = grid[:h - 4, 4:w - 4].reshape(-1)
    assert frm.shape == to.shape == (34 * src.size,)
    assert np.array_equal(frm[:src.size], src)
    for k, (dy, dx) in enumerate(pair_offsets(r)):
        sl = slice(k * src.size, (k + 1) * src.size)
        assert np.array_equal(to[sl], src + dy * w + dx)


def test_full_pair_set_covers_every_in_grid_pair():
    h, w, r = 7, 9, 3
    frm, to = pair_indices(h, w, r, full=True)
    got = {tuple(sorted(p)) for p in zip(frm.tolist(), to.tolist(), strict=True)}
    want = set()
    for y in range(h):
        for x in range(w):
            for y2 in range(h):
                for x2 in range(w):
                    if 0 < (y - y2) ** 2 + (x - x2) ** 2 < r * r:
                        want.add(tuple(sorted((y * w + x, y2 * w + x2))))
    assert got == want and len(frm) == len(want)


def test_affinity_matrix_values():
    rng = np.random.default_rng(0)
    feat = rng.normal(size=(6, 8, 11)).astype(np.float32)
    a = affinity_from_features(feat, 5)
    assert (a != a.T).nnz == 0
    assert np.allclose(a.diagonal(), 1)
    f = feat.reshape(6, -1)
    frm, to = pair_indices(8, 11, 5)
    for i, j in list(zip(frm, to, strict=True))[::37]:
        assert a[i, j] == pytest.approx(np.exp(-np.abs(f[:, i] - f[:, j]).mean()), rel=1e-5)
    assert a.nnz == 8 * 11 + 2 * len(frm)


@pytest.mark.parametrize("full", [False, True])
def test_sparse_walk_equals_dense_matrix_power(full):
    rng = np.random.default_rng(1)
    h, w = 14, 17
    feat = _features(rng, h, w)
    aff = affinity_from_features(feat, 5, full=full)
    cams = rng.uniform(0, 1, (3, h * w)).astype(np.float32)
    t = transition_matrix(aff, 8.0)
    assert sparse.issparse(t) and np.allclose(np.asarray(t.sum(axis=0)), 1)
    sparse_out = propagate(cams, t, logt=6)
    # reference: the release's dense squaring, in float64 here
    td = transition_matrix(aff.toarray().astype(np.float64), 8.0)
    assert np.allclose(td, t.toarray())
    ref = cams.astype(np.float64) @ np.linalg.matrix_power(td, 64)
    np.testing.assert_allclose(sparse_out, ref, rtol=1e-4, atol=1e-6)
    dense_out = propagate(cams, t, logt=6, dense=True)  # float32, as the release
    np.testing.assert_allclose(dense_out, ref, rtol=1e-3, atol=1e-5)


def test_sparse_and_dense_labels_agree():
    rng = np.random.default_rng(2)
    H, W = 93, 125  # grid 12 x 16, image padded by 3 rows / 3 columns
    feat = _features(rng, -(-H // 8), -(-W // 8))
    cams = np.stack([np.clip(rng.normal(0.5, 0.3, (H, W)), 0, 1) for _ in range(2)]).astype(np.float32)
    a = random_walk_labels(feat, cams, [4, 11], (H, W))
    b = random_walk_labels(feat, cams, [4, 11], (H, W), dense=True)
    assert a.shape == (H, W) and a.dtype == np.uint8
    assert set(np.unique(a)) <= {0, 5, 12}
    assert (a == b).mean() >= 0.999


def test_pooled_cams_pad_and_background():
    cams = np.zeros((1, 10, 13), np.float32)
    cams[0, :8, :8] = 1.0
    g = pooled_cams(cams, (2, 2), alpha=6)
    assert g.shape == (2, 2, 2)
    assert g[1, 0, 0] == pytest.approx(1.0) and g[0, 0, 0] == pytest.approx(0.0)
    # block (1, 1) covers rows 8..15, cols 8..15: 2x5 image pixels (bg score 1), the rest padding (0)
    assert g[0, 1, 1] == pytest.approx(10 / 64)
    assert np.allclose(avg_pool(np.ones((1, 16, 8))), 1)


def test_no_classes_is_all_background():
    feat = np.zeros((4, 3, 3), np.float32)
    out = random_walk_labels(feat, np.zeros((0, 20, 20), np.float32), [], (20, 20))
    assert out.shape == (20, 20) and not out.any()


def test_walk_spreads_a_seed_inside_its_region():
    # two regions with very different features: the walk fills a CAM hole in the left
    # region and does not leak the class into the right one
    h, w = 12, 12
    feat = np.zeros((8, h, w), np.float32)
    feat[:, :, 6:] = 5.0
    cams = np.zeros((1, h * 8, w * 8), np.float32)
    cams[0, :, :48] = 0.8
    cams[0, 40:56, 16:32] = 0.0  # hole
    assert (cams[0] < 1 - cams[0])[40:56, 16:32].all()  # background before the walk
    lab = random_walk_labels(feat, cams, [0], (h * 8, w * 8), alpha=1)
    assert (lab[40:56, 16:32] == 1).all()
    assert (lab[:, :44] == 1).all() and (lab[:, 52:] == 0).all()
    scores = random_walk_scores(pooled_cams(cams, (h, w), 1), affinity_from_features(feat))
    assert scores.shape == (2, h, w)
