"""Untrusted input: content sniffing by magic bytes, image decoding with the pixel
limit checked from the header, class-label parsing, request bodies read under a cap and
server folders under SEAM_ALLOWED_ROOT. Every failure is an `ApiError` with a 4xx status
and a message saying what was wrong."""
from __future__ import annotations

import io
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import numpy as np
from PIL import Image
from seam.service.core.errors import ApiError

from seam.common.classes import resolve_labels
from seam.common.image import ImageDecodeError, load_rgb

_IMAGE_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"\x89PNG\r\n\x1a\n", "png"), (b"\xff\xd8\xff", "jpeg"), (b"GIF87a", "gif"), (b"GIF89a", "gif"),
    (b"BM", "bmp"), (b"II*\x00", "tiff"), (b"MM\x00*", "tiff"),
)
IMAGE_TYPES = ("png", "jpeg", "gif", "bmp", "tiff", "webp")


# ISO base media (HEIF) brands: iPhone photos (HEIC) and AVIF. Pillow cannot decode them; named
# in the 415 so the client knows to convert, rather than "not an image".
_HEIF_BRANDS = {b"heic": "HEIC", b"heix": "HEIC", b"heim": "HEIC", b"heis": "HEIC", b"hevc": "HEIC",
                b"hevx": "HEIC", b"mif1": "HEIF", b"msf1": "HEIF", b"avif": "AVIF", b"avis": "AVIF"}


def unsupported_image_format(head: bytes) -> str | None:
    """The name of an image format we recognise but do not decode (HEIC/HEIF/AVIF), or None."""
    if head[4:8] == b"ftyp":
        return _HEIF_BRANDS.get(head[8:12])
    return None


def not_an_image(head: bytes) -> ApiError:
    """The 415 for bytes that are not a supported image, naming the format when we know it."""
    known = unsupported_image_format(head)
    if known:
        return ApiError(415, "unsupported_media_type", f"{known} images are not supported: convert the photo to "
                                                       f"JPEG or PNG (accepted: {', '.join(IMAGE_TYPES)})")
    return ApiError(415, "unsupported_media_type",
                    f"the upload is not a supported image (by its content; accepted: {', '.join(IMAGE_TYPES)})")


def sniff_image(head: bytes) -> str | None:
    """Image type from the first bytes, or None. Never trusts names or Content-Type."""
    for magic, kind in _IMAGE_MAGIC:
        if head.startswith(magic):
            return kind
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    return None


def sniff_archive(head: bytes) -> str | None:
    """'zip', 'tar' (plain or gzip/bzip2/xz-compressed) or None."""
    if head.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        return "zip"
    if head.startswith((b"\x1f\x8b", b"BZh", b"\xfd7zXZ\x00")) or head[257:262] == b"ustar":
        return "tar"
    return None


def image_size(data: bytes) -> tuple[int, int]:
    """(width, height) from the header only; nothing is decoded."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            return img.size
    except Image.DecompressionBombError as exc:
        raise ApiError(413, "image_too_large", f"image is too large to decode (decompression bomb?): {exc}") from None
    except Exception as exc:  # noqa: BLE001 - any parser failure is the client's bad bytes
        raise ApiError(422, "invalid_image", f"could not read the image header: {exc}") from None


def check_pixels(width: int, height: int, max_pixels: int) -> None:
    if width * height > max_pixels:
        raise ApiError(413, "image_too_large",
                       f"image is {width}x{height} = {width * height} pixels, over the limit of {max_pixels} pixels")


def decode_image(data: bytes, max_pixels: int) -> np.ndarray:
    """Bytes -> (H, W, 3) uint8 RGB, EXIF orientation applied.

    415: not an image by content; 413: over the pixel limit (read from the header,
    before any pixel is allocated); 422: truncated or corrupt.
    """
    if not data:
        raise ApiError(422, "invalid_image", "the image file is empty")
    kind = sniff_image(data[:16])
    if kind is None:
        raise not_an_image(data[:16])
    w, h = image_size(data)
    check_pixels(w, h, max_pixels)
    try:
        return load_rgb(data, max_pixels=max_pixels)
    except ImageDecodeError as exc:
        raise ApiError(422, "invalid_image", f"could not decode the {kind.upper()} image: {exc}") from None
    except (MemoryError, Image.DecompressionBombError) as exc:
        raise ApiError(413, "image_too_large", f"image is too large to decode: {exc}") from None


def parse_label_tokens(text: str | None) -> list[str] | None:
    if text is None or not text.strip():
        return None
    return [t.strip() for t in text.replace(";", ",").split(",") if t.strip()]


def resolve_or_422(tokens: Sequence[str | int] | None, foreground: Sequence[str]) -> list[int] | None:
    if tokens is None:
        return None
    try:
        return resolve_labels(tokens, foreground)
    except ValueError as exc:
        raise ApiError(422, "unknown_class", str(exc)) from None


def parse_labels(text: str | None, foreground: Sequence[str]) -> list[int] | None:
    """'dog,person' or '11,14' -> sorted foreground indices; absent/empty -> None (predict)."""
    return resolve_or_422(parse_label_tokens(text), foreground)


async def read_capped(stream: AsyncIterator[bytes], cap: int, what: str) -> bytes:
    """A request body (`request.stream()`), refused with 413 as soon as it passes `cap` bytes;
    `what` names the body and its limit in the message."""
    chunks, n = [], 0
    async for chunk in stream:
        n += len(chunk)
        if n > cap:
            raise ApiError(413, "too_large", f"{what} are limited to {cap} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def allowed_directory(root: Path | None, directory: str, what: str) -> Path:
    """`directory` (absolute, or relative to `root`) resolved, when it is a directory under the
    allowed root (SEAM_ALLOWED_ROOT): 403 when there is no root or it lies outside, 422 when it is
    not a directory. `what` names the feature ("directory jobs") in the messages."""
    if root is None:
        raise ApiError(403, "forbidden", f"{what} are disabled on this server (set SEAM_ALLOWED_ROOT)")
    shown = directory[:200]
    try:
        p = Path(directory)
        target = (p if p.is_absolute() else root / p).resolve()
        if not target.is_relative_to(root):
            raise ApiError(403, "forbidden", f"{shown!r} is outside the allowed root")
        if not target.is_dir():
            raise ApiError(422, "invalid_directory", f"{shown!r} is not a directory under the allowed root")
    except (ValueError, OSError, RuntimeError) as exc:  # NUL byte, ENAMETOOLONG, a symlink loop
        reason = getattr(exc, "strerror", None) or type(exc).__name__
        raise ApiError(422, "invalid_directory", f"bad directory {shown!r}: {reason}") from None
    return target
