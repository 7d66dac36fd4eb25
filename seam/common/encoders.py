"""Output encoders shared by the CLIs and the service: PNGs, COCO RLE, CAM archives, overlays.

numpy + Pillow only; the COCO RLE is written here (not with pycocotools) so the
service does not need the C extension to answer requests.
"""
from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
from PIL import Image

from seam.common.classes import IGNORE_INDEX
from seam.common.palette import label_to_pil, voc_palette


def _png_bytes(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def encode_png_label(label: np.ndarray) -> bytes:
    """(H, W) integer labels 0..255 as a VOC-palette PNG."""
    label = np.asarray(label)
    if label.size and (label.min() < 0 or label.max() > 255):
        raise ValueError(f"label values must be within 0..255, got {label.min()}..{label.max()}")
    return _png_bytes(label_to_pil(label))


def encode_png_rgb(arr: np.ndarray) -> bytes:
    """(H, W, 3) or (H, W) uint8 array as a PNG."""
    arr = np.asarray(arr)
    if arr.dtype != np.uint8 or not (arr.ndim == 2 or (arr.ndim == 3 and arr.shape[2] == 3)):
        raise ValueError(f"expected (H, W, 3) or (H, W) uint8, got {arr.shape} {arr.dtype}")
    return _png_bytes(Image.fromarray(arr))


def rle_counts(mask: np.ndarray) -> list[int]:
    """COCO run lengths of a (H, W) mask: column-major, alternating, starting with zeros."""
    flat = np.asarray(mask, dtype=bool).ravel(order="F")
    if flat.size == 0:
        return []
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    bounds = np.concatenate([[0], change, [flat.size]])
    runs = np.diff(bounds).tolist()
    return [0, *runs] if flat[0] else runs


def rle_string(counts: Sequence[int]) -> str:
    """pycocotools' `rleToString`: deltas against the count two back, 5-bit LEB128-like chars."""
    out = []
    for i, x in enumerate(counts):
        x = int(x)
        if i > 2:
            x -= int(counts[i - 2])
        more = True
        while more:
            c = x & 0x1F
            x >>= 5  # arithmetic shift, like C's on a signed long
            more = x != -1 if c & 0x10 else x != 0
            if more:
                c |= 0x20
            out.append(chr(c + 48))
    return "".join(out)


def coco_rle(mask: np.ndarray) -> dict[str, Any]:
    """Compressed COCO RLE {"size": [h, w], "counts": str}, accepted by pycocotools.mask.decode."""
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"mask must be 2-D, got shape {mask.shape}")
    h, w = mask.shape
    return {"size": [int(h), int(w)], "counts": rle_string(rle_counts(mask))}


def coco_annotations(
    label: np.ndarray, class_names: Sequence[str], image_id: int | str, start_id: int = 1
) -> list[dict[str, Any]]:
    """One COCO annotation per foreground class present in a (H, W) label map.

    `class_names` is indexed by label value (0 = background, e.g. VOC_CLASSES), so
    category_id = foreground index + 1 = the label value. Background and 255 are skipped.
    """
    label = np.asarray(label)
    anns = []
    values = [int(v) for v in np.unique(label) if v != 0 and v != IGNORE_INDEX]
    for k, v in enumerate(values):
        if v >= len(class_names):
            raise ValueError(f"label {v} has no class name ({len(class_names)} names)")
        mask = label == v
        ys, xs = np.nonzero(mask)
        x0, y0 = int(xs.min()), int(ys.min())
        anns.append({
            "id": start_id + k,
            "image_id": image_id,
            "category_id": v,
            "category": class_names[v],
            "segmentation": coco_rle(mask),
            "area": int(mask.sum()),
            "bbox": [x0, y0, int(xs.max()) - x0 + 1, int(ys.max()) - y0 + 1],
            "iscrowd": 0,
        })
    return anns


CamDtype = Literal["float32", "float16", "uint8"]
CAM_DTYPES: tuple[str, ...] = ("float32", "float16", "uint8")


def quantize_cams(cams: np.ndarray, dtype: CamDtype = "float32") -> np.ndarray:
    """[0, 1] maps in a storage dtype: float32/float16 as they are, uint8 as round(255 x)
    (a step of 1/255, below any threshold a slider can show); always C-ordered, since
    readers that are not numpy (the web page) cannot all transpose Fortran-ordered data."""
    cams = np.asarray(cams)
    if dtype == "uint8":
        out = np.rint(np.clip(cams, 0.0, 1.0) * 255.0).astype(np.uint8)
    elif dtype in ("float32", "float16"):
        out = cams.astype(dtype)
    else:
        raise ValueError(f"unknown CAM dtype {dtype!r}; use one of {', '.join(CAM_DTYPES)}")
    return np.ascontiguousarray(out)


def encode_cams_npz(
    classes: Sequence[int], cams: np.ndarray, dtype: CamDtype = "float32", class_names: Sequence[str] | None = None,
    image_size: tuple[int, int] | None = None,
) -> bytes:
    """Compressed .npz with "classes" (K,) int64, "cams" (K, H, W) C-ordered in `dtype` (uint8:
    value / 255), optionally "class_names" (K,) and "image_size" [height, width] of the image
    the maps belong to (when they are at a smaller working size)."""
    cams = np.asarray(cams)
    classes_arr = np.asarray(list(classes), dtype=np.int64)
    if cams.ndim != 3 or cams.shape[0] != classes_arr.shape[0]:
        raise ValueError(f"{classes_arr.shape[0]} classes but CAM array of shape {cams.shape}")
    arrays: dict[str, np.ndarray] = {"classes": classes_arr, "cams": quantize_cams(cams, dtype)}
    if class_names is not None:
        if len(class_names) != classes_arr.shape[0]:
            raise ValueError(f"{len(class_names)} class names for {classes_arr.shape[0]} classes")
        arrays["class_names"] = np.asarray([str(n) for n in class_names], dtype=np.str_)  # unicode, no pickle
    if image_size is not None:
        arrays["image_size"] = np.asarray([int(v) for v in image_size], dtype=np.int64)
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    return buf.getvalue()


def decode_cams_npz(data: bytes) -> tuple[np.ndarray, np.ndarray]:
    """(classes (K,) int64, cams (K, H, W) float32 in [0, 1]) from `encode_cams_npz` output
    (uint8 maps divided by 255); never unpickles."""
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            if "classes" not in z or "cams" not in z:
                raise ValueError("CAM archive needs arrays 'classes' and 'cams'")
            classes = np.asarray(z["classes"]).astype(np.int64).reshape(-1)
            stored = np.asarray(z["cams"])
    except (OSError, EOFError) as exc:  # not a zip / truncated
        raise ValueError(f"not a CAM .npz archive: {exc}") from exc
    cams = stored.astype(np.float32) / 255.0 if stored.dtype == np.uint8 else stored.astype(np.float32)
    if cams.ndim != 3 or cams.shape[0] != classes.shape[0]:
        raise ValueError(f"{classes.shape[0]} classes but CAM array of shape {cams.shape}")
    return classes, cams


def jet(x: np.ndarray) -> np.ndarray:
    """(...,) values in [0, 1] -> (..., 3) uint8 with a jet-like colour map (blue -> red)."""
    x = np.clip(np.nan_to_num(np.asarray(x, dtype=np.float32)), 0.0, 1.0)[..., None]
    centers = np.asarray([3.0, 2.0, 1.0], np.float32)  # r, g, b peaks at x = 3/4, 1/2, 1/4
    return (np.clip(1.5 - np.abs(4.0 * x - centers), 0.0, 1.0) * 255 + 0.5).astype(np.uint8)


def _blend(rgb: np.ndarray, colours: np.ndarray, alpha: float) -> np.ndarray:
    out = (1.0 - alpha) * rgb.astype(np.float32) + alpha * colours.astype(np.float32)
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def _check_rgb(rgb: np.ndarray, hw: tuple[int, ...]) -> np.ndarray:
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"rgb must be (H, W, 3), got {rgb.shape}")
    if rgb.shape[:2] != hw:
        raise ValueError(f"image size {rgb.shape[:2]} differs from map size {hw}")
    return rgb


def heatmap_overlay(rgb: np.ndarray, cam: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """(H, W, 3) uint8: the image blended with a jet rendering of a [0, 1] CAM."""
    cam = np.asarray(cam)
    rgb = _check_rgb(rgb, cam.shape)
    return _blend(rgb, jet(cam), alpha)


MASK_ALPHA = 0.6  # tint of a mask overlay: strong enough to show over a subject of the class's own colour
OUTLINE_PER_PIXELS = 300  # outline radius: 1 pixel per this many pixels of the long side (at least 1)


def outline_radius(hw: tuple[int, ...]) -> int:
    """Outline half-width for an overlay of size `hw`: thin on small images, still visible on a
    4000-pixel photo shown as a thumbnail."""
    return max(1, max(int(v) for v in hw[:2]) // OUTLINE_PER_PIXELS)


def mask_edges(label: np.ndarray, radius: int | None = None) -> np.ndarray:
    """(H, W) bool: foreground pixels within `radius` (square neighbourhood, the image's own
    border not counting) of a pixel with another label."""
    from scipy.ndimage import maximum_filter, minimum_filter

    label = np.asarray(label, np.uint8)
    size = 2 * (outline_radius(label.shape) if radius is None else int(radius)) + 1
    fg = (label != 0) & (label != IGNORE_INDEX)
    return fg & (maximum_filter(label, size, mode="nearest") != minimum_filter(label, size, mode="nearest"))


def mask_overlay(rgb: np.ndarray, label: np.ndarray, alpha: float = MASK_ALPHA, outline: bool = True) -> np.ndarray:
    """(H, W, 3) uint8: VOC colours blended over foreground pixels (background and 255 left as
    is) and, with `outline`, each region's edge drawn white over dark pixels and black over
    light ones, so a mask shows even where its colour matches the subject (a dark-red disc
    mask over a red disc)."""
    label = np.asarray(label)
    rgb = _check_rgb(rgb, label.shape)
    out = rgb.astype(np.uint8, copy=True)
    fg = (label != 0) & (label != IGNORE_INDEX)
    out[fg] = _blend(rgb[fg], voc_palette()[label[fg].astype(np.uint8)], alpha)
    if outline:
        edge = mask_edges(label)
        px = rgb[edge].astype(np.int32)
        luma = (299 * px[:, 0] + 587 * px[:, 1] + 114 * px[:, 2]) // 1000
        out[edge] = np.where(luma < 128, 255, 0).astype(np.uint8)[:, None]
    return out
