"""Mask encodings of the labelling tools (numpy only; shared by the service and the CLIs).

- Label Studio brush RLE: `label_studio_sdk.converter.brush.mask2rle` (each pixel repeated
  4x as RGBA, packed with thi-ng `rle-pack`: 32-bit count, 5-bit word size - 1, four 4-bit
  run-length field sizes [3, 4, 8, 16], then runs). Not COCO RLE.
- CVAT mask shape points: `cvat_sdk.masks.encode_mask` (run lengths inside the bbox, starting
  with a background run, then x1, y1, x2 - 1, y2 - 1).
- CVAT serverless (nuclio) mask: the row-major 0/255 crop of the inclusive bbox followed by
  xtl, ytl, xbr, ybr (`to_cvat_mask` of cvat's serverless functions).
- Polygons: outer pixel-edge contours of the 4-connected components, vertices at pixel
  corners, so rasterising a polygon at pixel centres gives its component back (holes filled).
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

# rle-pack header of Label Studio's encoder: word size 8 bits, run-length field sizes
LS_WORD_SIZE = 8
LS_RLE_SIZES = (3, 4, 8, 16)
_LS_MAX_RUN = 1 << 16


def _mask2d(mask: np.ndarray) -> np.ndarray:
    m = np.asarray(mask)
    if m.ndim != 2:
        raise ValueError(f"mask must be 2-D, got shape {m.shape}")
    return m.astype(bool, copy=False)


def _runs(flat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(lengths, values) of the runs of equal values of a 1-D array."""
    if flat.size == 0:
        return np.zeros(0, np.int64), flat[:0]
    ends = np.flatnonzero(flat[1:] != flat[:-1])
    ends = np.append(ends, flat.size - 1)
    lengths = np.diff(np.concatenate([[-1], ends]))
    return lengths.astype(np.int64), flat[ends]


def ls_rle_encode(mask: np.ndarray) -> list[int]:
    """(H, W) mask -> Label Studio brush RLE (list of byte values), pixels 0 or 255.

    Byte-for-byte what `label_studio_sdk.converter.brush.mask2rle(mask * 255)` writes:
    runs of 4 x (pixels of one value) bytes, split at 65536, each written as a repeat
    record `1, size index (2 bits), length - 1, value (8 bits)`."""
    m = _mask2d(mask)
    lengths, values = _runs(m.ravel())
    lengths = lengths * 4  # RGBA: every pixel value is repeated four times
    values = np.where(values, 255, 0).astype(np.int64)
    # runs longer than 65536 become several full records plus the remainder, as in the SDK
    full = np.maximum((lengths - 1) // _LS_MAX_RUN, 0)
    rep = full + 1
    rec_len = np.repeat(lengths, rep)
    rec_val = np.repeat(values, rep)
    first = np.cumsum(rep) - rep  # index of each run's first record
    pos_in_run = np.arange(rec_len.size) - np.repeat(first, rep)
    rec_len = np.where(pos_in_run < np.repeat(full, rep), _LS_MAX_RUN, rec_len - np.repeat(full, rep) * _LS_MAX_RUN)
    idx = np.select([rec_len <= 8, rec_len <= 16, rec_len <= 256], [0, 1, 2], 3)
    nbits = np.asarray(LS_RLE_SIZES, np.int64)[idx]
    words = (((np.int64(1) << 2 | idx) << nbits | (rec_len - 1)) << LS_WORD_SIZE) | rec_val
    widths = 3 + nbits + LS_WORD_SIZE
    # each record's bits, most significant first, right-aligned in a 27-bit row
    span = int(widths.max()) if widths.size else 0
    shifts = np.arange(span - 1, -1, -1, dtype=np.int64)
    bits = ((words[:, None] >> shifts[None, :]) & 1).astype(np.uint8)
    keep = shifts[None, :] < widths[:, None]
    body = bits[keep]
    n = m.size * 4
    header = f"{n:032b}{LS_WORD_SIZE - 1:05b}" + "".join(f"{s - 1:04b}" for s in LS_RLE_SIZES)
    head = np.frombuffer(header.encode(), np.uint8) - ord("0")
    allbits = np.concatenate([head, body])
    # the SDK always pads with 8 - len % 8 zero bits (a whole zero byte when already aligned)
    allbits = np.concatenate([allbits, np.zeros(8 - allbits.size % 8, np.uint8)])
    return np.packbits(allbits).tolist()


def ls_rle_decode(rle: Sequence[int], height: int, width: int) -> np.ndarray:
    """Label Studio brush RLE -> (H, W) bool (alpha channel > 0). For clients and checks."""
    bits = np.unpackbits(np.asarray(rle, np.uint8))
    pos = 0

    def read(k: int) -> int:
        nonlocal pos
        v = 0
        for b in bits[pos:pos + k]:
            v = (v << 1) | int(b)
        pos += k
        return v

    num = read(32)
    word = read(5) + 1
    sizes = [read(4) + 1 for _ in range(4)]
    out = np.zeros(num, np.uint8)
    i = 0
    while i < num:
        repeat = read(1)
        j = i + 1 + read(sizes[read(2)])
        if repeat:
            out[i:j] = read(word)
            i = j
        else:
            while i < j:
                out[i] = read(word)
                i += 1
    if num != height * width * 4:
        raise ValueError(f"RLE holds {num} values, expected {height}x{width}x4")
    return out.reshape(height, width, 4)[:, :, 3] > 0


def bbox_xyxy(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    """Inclusive (x1, y1, x2, y2) of the non-zero pixels, or None when empty."""
    m = _mask2d(mask)
    rows = np.flatnonzero(m.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(m.any(axis=0))
    return int(cols[0]), int(rows[0]), int(cols[-1]), int(rows[-1])


def cvat_mask_points(mask: np.ndarray) -> list[int]:
    """(H, W) mask -> the `points` of a CVAT mask shape (`cvat_sdk.masks.encode_mask` layout):
    run lengths over the bbox crop, starting with a background run, then x1, y1, x2, y2 (inclusive)."""
    m = _mask2d(mask)
    box = bbox_xyxy(m)
    if box is None:
        raise ValueError("empty mask: CVAT has no encoding for it")
    x1, y1, x2, y2 = box
    lengths, values = _runs(m[y1:y2 + 1, x1:x2 + 1].ravel())
    runs = lengths.tolist()
    if values[0]:
        runs = [0, *runs]
    return [*runs, x1, y1, x2, y2]


def cvat_nuclio_mask(mask: np.ndarray) -> list[int]:
    """(H, W) mask -> the `mask` field of a CVAT serverless result: the row-major 0/255 crop of
    the inclusive bbox followed by xtl, ytl, xbr, ybr."""
    m = _mask2d(mask)
    box = bbox_xyxy(m)
    if box is None:
        raise ValueError("empty mask: CVAT has no encoding for it")
    x1, y1, x2, y2 = box
    crop = np.where(m[y1:y2 + 1, x1:x2 + 1], 255, 0)
    return [*crop.ravel().tolist(), x1, y1, x2, y2]


# --- polygons -------------------------------------------------------------------
# Directed pixel edges, foreground on the right when walking (image coordinates, y down):
# top (x, y)->(x+1, y), right (x+1, y)->(x+1, y+1), bottom (x+1, y+1)->(x, y+1), left (x, y+1)->(x, y).
_DIRS = ((1, 0), (0, 1), (-1, 0), (0, -1))  # east, south, west, north


def mask_polygons(mask: np.ndarray, min_area: int = 1) -> list[np.ndarray]:
    """Outer contours of the 4-connected components of a mask, as (N, 2) float arrays of
    (x, y) pixel-corner vertices (only the corners, collinear points dropped), clockwise on
    screen. Holes are not represented (their pixels fall inside the outer polygon).

    `min_area`: polygons enclosing fewer pixels are dropped."""
    m = _mask2d(mask)
    h, w = m.shape
    p = np.pad(m, 1)
    fg = p[1:-1, 1:-1]
    # outgoing edge at each corner (x, y) for each direction; a corner can have two
    # (pixels touching only diagonally), resolved by always turning right first, which keeps
    # 4-connected components apart
    out = np.zeros((4, h + 1, w + 1), bool)
    out[0, :-1, :-1] |= fg & ~p[:-2, 1:-1]      # top edges start at (x, y)
    out[1, :-1, 1:] |= fg & ~p[1:-1, 2:]        # right edges start at (x+1, y)
    out[2, 1:, 1:] |= fg & ~p[2:, 1:-1]         # bottom edges start at (x+1, y+1)
    out[3, 1:, :-1] |= fg & ~p[1:-1, :-2]       # left edges start at (x, y+1)
    polys: list[np.ndarray] = []
    for d0, y0, x0 in zip(*np.nonzero(out), strict=True):
        if not out[d0, y0, x0]:
            continue
        pts: list[tuple[int, int]] = []
        x, y, d = int(x0), int(y0), int(d0)
        prev = -1  # no direction yet: the first corner always starts a run
        while out[d, y, x]:
            out[d, y, x] = False
            if not pts or d != prev:
                pts.append((x, y))
            prev = d
            x += _DIRS[d][0]
            y += _DIRS[d][1]
            for turn in (1, 0, 3):  # right, straight, left (a U-turn never happens on a boundary)
                nd = (d + turn) % 4
                if out[nd, y, x]:
                    d = nd
                    break
        if len(pts) >= 3 and _dir(pts[-1], pts[0]) == _dir(pts[0], pts[1]):
            pts.pop(0)  # the start corner lies mid-way along the closing run
        arr = np.asarray(pts, dtype=np.float64)
        area = _signed_area(arr)
        if area > 0 and area >= min_area:  # clockwise on screen = an outer boundary
            polys.append(arr)
    return polys


def _dir(a: tuple[int, int], b: tuple[int, int]) -> tuple[int, int]:
    return int(np.sign(b[0] - a[0])), int(np.sign(b[1] - a[1]))


def _signed_area(pts: np.ndarray) -> float:
    """Shoelace area; positive for clockwise-on-screen (y down) vertex order."""
    x, y = pts[:, 0], pts[:, 1]
    return 0.5 * float(np.dot(x, np.roll(y, -1)) - np.dot(np.roll(x, -1), y))
