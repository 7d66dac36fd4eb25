"""AffinityNet random walk (Ahn & Kwak, CVPR 2018) in numpy/scipy, shared by the torch
CLI and the onnxruntime engine (which computes the feature map itself and calls
`random_walk_labels`).

The authors' `infer_aff` builds the (n, n) affinity matrix densely (n = h*w at
stride 8), raises it to beta, adds the identity, column-normalises it into T and
squares T logt times (T^(2^logt)), then multiplies the pooled CAMs by it: O(n^3)
time and O(n^2) memory. Only pairs within `radius` are non-zero (~70 per row), so
here A is a scipy CSR matrix and the CAM rows are multiplied by T 2^logt times,
which gives the same cam_vec @ T^(2^logt) in O(2^logt * nnz * C).

Pair set: the authors' `get_indices_of_pairs`. Offsets (dy, dx) of one half-plane,
(0, 1..r-1) and (1..r-1, -(r-1)..r-1) with dy^2 + dx^2 < r^2 (34 for r = 5), from
every "source" pixel of the cropped grid rows [0, h-r+1), columns [r-1, w-r+1), so
that every target is inside the grid. Pixels near the bottom and side borders are
only ever targets, as in the release; `full=True` instead takes every in-grid pair.
"""
from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

import numpy as np
from scipy import sparse

from seam.common.cam import background_score, interp_matrix

OUTPUT_STRIDE = 8
DEFAULT_RADIUS = 5
DEFAULT_ALPHA = 6.0  # bg channel (1 - max fg)^alpha, the release's infer_aff default
DEFAULT_BETA = 8.0  # affinities raised to beta
DEFAULT_LOGT = 6  # T^(2^logt) = T^64


@lru_cache(maxsize=8)
def pair_offsets(radius: int = DEFAULT_RADIUS) -> tuple[tuple[int, int], ...]:
    """The authors' half-plane search offsets (dy, dx) with |d| < radius."""
    offs = [(0, dx) for dx in range(1, radius)]
    offs += [(dy, dx) for dy in range(1, radius) for dx in range(-radius + 1, radius)
             if dx * dx + dy * dy < radius * radius]
    return tuple(offs)


def source_windows(h: int, w: int, radius: int = DEFAULT_RADIUS,
                   full: bool = False) -> list[tuple[int, int, int, int, int, int]]:
    """Per offset (dy, dx, y0, y1, x0, x1): the window of source pixels whose target
    (y + dy, x + dx) is paired. The release uses one window for all offsets, rows
    [0, h-r+1), columns [r-1, w-r+1); full=True takes every in-grid source."""
    r1 = radius - 1
    out = []
    for dy, dx in pair_offsets(radius):
        if full:
            y0, y1, x0, x1 = 0, h - dy, max(0, -dx), min(w, w - dx)
        else:
            y0, y1, x0, x1 = 0, h - r1, r1, w - r1
        if y1 > y0 and x1 > x0:
            out.append((dy, dx, y0, y1, x0, x1))
    return out


@lru_cache(maxsize=64)
def pair_indices(h: int, w: int, radius: int = DEFAULT_RADIUS, full: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Flat pixel indices (ind_from (m,), ind_to (m,)) of the pairs on an (h, w) grid,
    offset by offset in `source_windows` order (the release's concatenated order)."""
    grid = np.arange(h * w, dtype=np.int64).reshape(h, w)
    froms, tos = [np.zeros(0, np.int64)], [np.zeros(0, np.int64)]
    for dy, dx, y0, y1, x0, x1 in source_windows(h, w, radius, full):
        froms.append(grid[y0:y1, x0:x1].reshape(-1))
        tos.append(grid[y0 + dy:y1 + dy, x0 + dx:x1 + dx].reshape(-1))
    ind_from, ind_to = np.concatenate(froms), np.concatenate(tos)
    for a in (ind_from, ind_to):
        a.flags.writeable = False
    return ind_from, ind_to


def pair_affinities(feat: np.ndarray, radius: int = DEFAULT_RADIUS, full: bool = False) -> np.ndarray:
    """exp(-mean_channel |f_i - f_j|) for the pairs of `pair_indices`, same order.

    feat (D, h, w) -> (m,) float32. Computed offset by offset on shifted windows of a
    channel-last copy (contiguous reductions, no gathers)."""
    D, h, w = feat.shape
    fl = np.ascontiguousarray(feat.transpose(1, 2, 0), dtype=np.float32)  # (h, w, D)
    parts = [np.zeros(0, np.float32)]
    buf = None
    for dy, dx, y0, y1, x0, x1 in source_windows(h, w, radius, full):
        shape = (y1 - y0, x1 - x0, D)
        if buf is None or buf.shape != shape:
            buf = np.empty(shape, np.float32)
        np.subtract(fl[y0:y1, x0:x1], fl[y0 + dy:y1 + dy, x0 + dx:x1 + dx], out=buf)
        np.abs(buf, out=buf)
        parts.append(buf.sum(axis=-1).reshape(-1))
    dist = np.concatenate(parts) / np.float32(D)
    return np.exp(-dist)


@lru_cache(maxsize=32)
def _csr_structure(h: int, w: int, radius: int, full: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(indptr, indices, order) of the symmetric pair matrix with unit diagonal: CSR data =
    concat([aff, aff, ones])[order]. Cached per grid, so each image only gathers values."""
    n = h * w
    frm, to = pair_indices(h, w, radius, full)
    diag = np.arange(n, dtype=np.int64)
    rows = np.concatenate([frm, to, diag])
    cols = np.concatenate([to, frm, diag])
    order = np.lexsort((cols, rows))
    indptr = np.zeros(n + 1, np.int64)
    np.cumsum(np.bincount(rows, minlength=n), out=indptr[1:])
    out = (indptr, cols[order].astype(np.int32 if n < 2**31 else np.int64), order)
    for a in out:
        a.flags.writeable = False
    return out


def affinity_from_features(feat: np.ndarray, radius: int = DEFAULT_RADIUS, full: bool = False) -> sparse.csr_matrix:
    """Symmetric (n, n) CSR affinity matrix of a (D, h, w) feature map, unit diagonal:
    the release's `aff_mat` (pairs within `radius`, both directions, plus identity)."""
    _, h, w = feat.shape
    n = h * w
    indptr, indices, order = _csr_structure(h, w, radius, full)
    aff = pair_affinities(feat, radius, full)
    vals = np.concatenate([aff, aff, np.ones(n, np.float32)])[order]
    return sparse.csr_matrix((vals, indices.copy(), indptr.copy()), shape=(n, n))


def transition_matrix(aff: sparse.spmatrix | np.ndarray, beta: float = DEFAULT_BETA) -> sparse.csr_matrix | np.ndarray:
    """T = A^beta / sum(A^beta, axis=0) (column-stochastic), sparse or dense as given."""
    if sparse.issparse(aff):
        a = aff.tocsr().power(beta)
        colsum = np.asarray(a.sum(axis=0)).reshape(-1)
        return (a @ sparse.diags(1.0 / colsum)).tocsr()
    a = np.power(aff, beta)
    return a / a.sum(axis=0, keepdims=True)


def propagate(cam_vec: np.ndarray, trans: sparse.spmatrix | np.ndarray, logt: int = DEFAULT_LOGT,
              dense: bool = False) -> np.ndarray:
    """cam_vec (C, n) @ T^(2^logt).

    dense=False: 2^logt sparse mat-vecs per class, x <- T^T x, in float64.
    dense=True: the release's method, T squared logt times in float32 (densified if sparse).
    """
    if dense:
        t = trans.toarray() if sparse.issparse(trans) else np.asarray(trans)
        t = t.astype(np.float32, copy=False)
        for _ in range(logt):
            t = t @ t
        return cam_vec.astype(np.float32) @ t
    tt = (trans.T if sparse.issparse(trans) else sparse.csr_matrix(trans).T).tocsr().astype(np.float64)
    out = np.empty(cam_vec.shape, np.float32)
    for c in range(cam_vec.shape[0]):  # one matvec per class beats csr @ (n, C) for small C
        x = cam_vec[c].astype(np.float64)
        for _ in range(1 << logt):
            x = tt @ x
        out[c] = x
    return out


def avg_pool(maps: np.ndarray, k: int = OUTPUT_STRIDE) -> np.ndarray:
    """(C, H, W) -> (C, H/k, W/k) non-overlapping mean; H, W must be multiples of k."""
    c, hh, ww = maps.shape
    return maps.reshape(c, hh // k, k, ww // k, k).mean(axis=(2, 4), dtype=np.float64).astype(np.float32)


def pooled_cams(cams: np.ndarray, grid_hw: tuple[int, int], alpha: float = DEFAULT_ALPHA,
                stride: int = OUTPUT_STRIDE) -> np.ndarray:
    """The release's random-walk input: [(1 - max fg)^alpha, fg CAMs] at image size,
    zero-padded to the stride-8 grid times 8 (bottom/right), then average-pooled by 8.

    cams (K, H, W) foreground only -> (K+1, h, w)."""
    K, H, W = cams.shape
    h, w = grid_hw
    ph, pw = h * stride, w * stride
    if ph < H or pw < W:
        raise ValueError(f"grid {grid_hw} is smaller than image {H}x{W} / {stride}")
    full = np.zeros((K + 1, ph, pw), np.float32)
    full[0, :H, :W] = background_score(cams, alpha)
    full[1:, :H, :W] = cams
    return avg_pool(full, stride)


def random_walk_scores(cam_grid: np.ndarray, aff: sparse.spmatrix | np.ndarray, beta: float = DEFAULT_BETA,
                       logt: int = DEFAULT_LOGT, dense: bool = False) -> np.ndarray:
    """(C, h, w) pooled scores propagated through the affinity matrix -> (C, h, w)."""
    c, h, w = cam_grid.shape
    trans = transition_matrix(aff if not dense or not sparse.issparse(aff) else aff.toarray(), beta)
    return propagate(cam_grid.reshape(c, h * w), trans, logt, dense=dense).reshape(c, h, w)


def upsample_argmax(scores: np.ndarray, image_hw: tuple[int, int], classes: Sequence[int],
                    stride: int = OUTPUT_STRIDE) -> np.ndarray:
    """Bilinear (align_corners=False) to the padded size grid*stride, crop to the image,
    argmax, map channel i>0 to label classes[i-1]+1. -> (H, W) uint8.

    Only the H x W rows/columns of the padded upsampling are computed."""
    c, h, w = scores.shape
    H, W = image_hw
    ry = interp_matrix(h * stride, h, False)[:H].astype(np.float32)  # (H, h)
    rx = interp_matrix(w * stride, w, False)[:W].astype(np.float32)  # (W, w)
    up = np.matmul(np.matmul(ry, scores.astype(np.float32, copy=False)), rx.T)  # (C, H, W)
    lut = np.asarray([0, *[int(k) + 1 for k in classes]], dtype=np.uint8)
    return lut[np.argmax(up, axis=0)]


def random_walk_labels(
    feat: np.ndarray,
    cams: np.ndarray,
    classes: Sequence[int],
    image_hw: tuple[int, int],
    alpha: float = DEFAULT_ALPHA,
    beta: float = DEFAULT_BETA,
    logt: int = DEFAULT_LOGT,
    radius: int = DEFAULT_RADIUS,
    dense: bool = False,
    full: bool = False,
) -> np.ndarray:
    """Pseudo label of one image: (H, W) uint8, 0 = background, c+1 = foreground class c.
    `radius` shrinks on grids under 2 * radius + 1 cells (`walk_radius`), as the release.

    feat: (D, h, w) AffinityNet feature map of the image zero-padded (after
      normalisation) to multiples of 8, i.e. h = ceil(H/8), w = ceil(W/8).
    cams: (K, H, W) foreground CAMs of `classes` (the authors' npy dict values).
    """
    H, W = image_hw
    if cams.shape[1:] != (H, W):
        raise ValueError(f"CAMs are {cams.shape[1:]}, image is {(H, W)}")
    if len(classes) != cams.shape[0]:
        raise ValueError(f"{cams.shape[0]} CAM channels for {len(classes)} classes")
    if len(classes) == 0:
        return np.zeros((H, W), np.uint8)
    h, w = feat.shape[1:]
    grid = pooled_cams(cams, (h, w), alpha)
    aff = affinity_from_features(feat, walk_radius(h, w, radius), full=full)
    scores = random_walk_scores(grid, aff, beta, logt, dense=dense)
    return upsample_argmax(scores, (H, W), classes)


def walk_radius(h: int, w: int, radius: int = DEFAULT_RADIUS) -> int:
    """The pair radius the release's AffinityNet uses on an h x w grid: `radius`, shrunk to
    (min(h, w) - 1) // 2 when the grid's short side has fewer than 2 * radius + 1 cells
    (resnet38_aff.Net.forward), so that pairs still fit. 0 leaves only the identity."""
    short = min(h, w)
    return (short - 1) // 2 if short < 2 * radius + 1 else radius


def grid_size(n: int, stride: int = OUTPUT_STRIDE) -> int:
    """Stride-8 grid size of the padded image (= ResNet-38's output size of n)."""
    return -(-n // stride)
