"""Image decoding and input normalisation shared by training and the service.

Everything here is numpy + Pillow so that the torch-free service and the training
code preprocess identically.
"""
from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)


class ImageDecodeError(ValueError):
    """The bytes are not a decodable image (or exceed the pixel limit)."""


# JPEG frame markers (SOFn) with Huffman coding; arithmetic coding (SOF9-11) can code a
# block in under a bit, so the bound below does not apply to it (and it is rare).
_SOF_HUFFMAN = frozenset({0xC0, 0xC1, 0xC2})
_NO_LENGTH = frozenset({0x01, *range(0xD0, 0xD9)})  # TEM, RSTn, SOI: markers without a segment


def _jpeg_frame(data: bytes) -> tuple[int, int, list[tuple[int, int, int]], list[tuple[list[int], int, int]]] | None:
    """(height, width, components (id, h, v), scans (component ids, Ss, entropy-coded bytes)) of a
    Huffman-coded JPEG, or None when it is not one this check understands."""
    if not data.startswith(b"\xff\xd8"):
        return None
    i, n = 2, len(data)
    frame: tuple[int, int, list[tuple[int, int, int]]] | None = None
    scans: list[tuple[list[int], int, int]] = []
    while i + 4 <= n:
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker == 0xD9:  # EOI
            break
        if marker in _NO_LENGTH:
            i += 2
            continue
        seg = int.from_bytes(data[i + 2:i + 4], "big")
        body = data[i + 4:i + 2 + seg]
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            if marker not in _SOF_HUFFMAN or len(body) < 6:
                return None
            h, w, nc = int.from_bytes(body[1:3], "big"), int.from_bytes(body[3:5], "big"), body[5]
            comps = [(body[6 + 3 * k], body[7 + 3 * k] >> 4, body[7 + 3 * k] & 15)
                     for k in range(nc) if 8 + 3 * k <= len(body)]
            frame = (h, w, comps)
        i += 2 + seg
        if marker == 0xDA:  # SOS: the entropy-coded data runs to the next marker other than RSTn
            ns = body[0] if body else 0
            ids = [body[1 + 2 * k] for k in range(ns) if 1 + 2 * k < len(body)]
            ss = body[1 + 2 * ns] if 1 + 2 * ns < len(body) else 0
            coded = 0
            while i < n:
                j = data.find(b"\xff", i)
                if j < 0 or j + 1 >= n:
                    coded += n - i
                    i = n
                    break
                coded += j - i
                nxt = data[j + 1]
                if nxt == 0x00:  # a stuffed 0xFF data byte
                    coded += 1
                    i = j + 2
                elif 0xD0 <= nxt <= 0xD7:  # restart marker
                    i = j + 2
                else:
                    i = j
                    break
            scans.append((ids, ss, coded))
    if frame is None:
        return None
    return (*frame, scans)


def check_jpeg_data(data: bytes) -> None:
    """ImageDecodeError when a JPEG's scans hold fewer bits than its header's size needs.

    libjpeg (and so Pillow) fills the blocks of a scan that ends early with grey and only
    warns, so a 1 KB file whose header claims 6000x6000 decodes to 36 megapixels of invented
    grey. Every block of a Huffman-coded scan that carries DC coefficients takes at least one
    bit, which bounds the size the data can really cover; a smaller lie is bounded by it too.
    """
    parsed = _jpeg_frame(data)
    if parsed is None:
        return
    h, w, comps, scans = parsed
    if not h or not w or not comps:
        return
    hmax, vmax = max(c[1] for c in comps) or 1, max(c[2] for c in comps) or 1
    def ceil(a: int, b: int) -> int:
        return -(-a // b)

    blocks = {cid: ceil(ceil(w * ch, hmax), 8) * ceil(ceil(h * cv, vmax), 8) for cid, ch, cv in comps}
    for ids, ss, coded in scans:
        if ss != 0:  # AC-only progressive scans can code long runs of empty blocks in a few bits
            continue
        needed_bits = sum(blocks.get(cid, 0) for cid in ids)
        if coded * 8 < needed_bits:
            raise ImageDecodeError(
                f"the JPEG header says {w}x{h} but its image data can hold at most about "
                f"{100 * coded * 8 // max(needed_bits, 1)}% of those pixels (truncated file or lying header)")


def to_rgb(img: Image.Image) -> Image.Image:
    """EXIF orientation applied, then RGB (greyscale, palette, RGBA, CMYK, 16-bit all end here).

    Transparent pixels are composited on black, so RGBA inputs behave like the
    RGB image a viewer would show on a dark background rather than exposing
    whatever colour hides under alpha 0.
    """
    img = ImageOps.exif_transpose(img)
    if img.mode in ("RGBA", "LA") or (img.mode == "P" and "transparency" in img.info):
        img = img.convert("RGBA")
        bg = Image.new("RGBA", img.size, (0, 0, 0, 255))
        img = Image.alpha_composite(bg, img)
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(img, dtype=np.float64)
        hi = arr.max() if arr.size else 1.0
        img = Image.fromarray((arr / max(hi, 1.0) * 255).astype(np.uint8))
    return img.convert("RGB")


def open_image(src: str | Path | bytes, max_pixels: int | None = None) -> Image.Image:
    """Decode a file path or bytes into an RGB PIL image.

    `max_pixels` is checked against the header before decoding so that a
    decompression bomb never gets allocated.
    """
    try:
        data = bytes(src) if isinstance(src, (bytes, bytearray)) else Path(src).read_bytes()
    except OSError as exc:  # no path in the message: it may reach a client
        raise ImageDecodeError(f"cannot read the image file: {exc.strerror or type(exc).__name__}") from exc
    if not data:
        raise ImageDecodeError("the image file is empty")
    with io.BytesIO(data) as fp:
        try:
            img = Image.open(fp)
            w, h = img.size
            if max_pixels is not None and w * h > max_pixels:
                raise ImageDecodeError(
                    f"image is {w}x{h} = {w * h} pixels, over the limit of {max_pixels}"
                )
            if img.format == "JPEG":
                check_jpeg_data(data)
            img.load()
        except ImageDecodeError:
            raise
        except UnidentifiedImageError as exc:  # its message names the file object: say it ourselves
            raise ImageDecodeError("not a readable image: the content is not a supported image format") from exc
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
            raise ImageDecodeError(f"not a readable image: {exc}") from exc
        return to_rgb(img)


def load_rgb(src: str | Path | bytes, max_pixels: int | None = None) -> np.ndarray:
    """(H, W, 3) uint8 RGB array."""
    return np.asarray(open_image(src, max_pixels=max_pixels), dtype=np.uint8)


@dataclass(frozen=True)
class Normalization:
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD

    def __call__(self, rgb: np.ndarray) -> np.ndarray:
        """(H, W, 3) uint8 -> (3, H, W) float32, as the authors' Normalize + HWC_to_CHW."""
        x = rgb.astype(np.float32) / 255.0
        x = (x - np.asarray(self.mean, np.float32)) / np.asarray(self.std, np.float32)
        return np.ascontiguousarray(x.transpose(2, 0, 1))


def resize_rgb(rgb: np.ndarray, size_hw: tuple[int, int], resample: int = Image.BICUBIC) -> np.ndarray:
    """Resize a uint8 RGB array with Pillow (the authors rescale with PIL bicubic)."""
    h, w = size_hw
    if rgb.shape[:2] == (h, w):
        return rgb
    return np.asarray(Image.fromarray(rgb).resize((w, h), resample=resample), dtype=np.uint8)


def scaled_size(hw: tuple[int, int], scale: float) -> tuple[int, int]:
    """Python's round(), as the authors' multi-scale dataset used (banker's rounding)."""
    h, w = hw
    return max(1, int(round(h * scale))), max(1, int(round(w * scale)))
