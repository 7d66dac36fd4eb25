"""Images and archives for the service tests: small RGB pictures, encoded files, zips and tars,
and hand-made hostile inputs (decompression bombs, lying headers, links, truncated files)."""
from __future__ import annotations

import io
import struct
import tarfile
import zipfile
import zlib

import numpy as np
from PIL import Image


def rgb_image(h: int = 48, w: int = 64, seed: int = 0) -> np.ndarray:
    """Left half red, right-bottom quarter green, plus a little noise."""
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 30, (h, w, 3), dtype=np.uint8)
    a[:, : w // 2, 0] = 220
    a[h // 2:, w // 2:, 1] = 230
    return a


def scene(h: int, w: int, seed: int = 0) -> np.ndarray:
    """Grey noise with a red and a blue block (the fake engine's classes are colours)."""
    rng = np.random.default_rng(seed)
    rgb = rng.integers(90, 120, (h, w, 3)).astype(np.uint8)
    rgb[h // 6: h // 2, 1: w // 2] = (230, 20, 25)
    rgb[h // 2: h - 2, w // 2: w - 3] = (15, 30, 240)
    return rgb


def encode(a: np.ndarray, fmt: str = "PNG", **kw) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format=fmt, **kw)
    return buf.getvalue()


def png_bytes(h: int = 48, w: int = 64, seed: int = 0) -> bytes:
    return encode(rgb_image(h, w, seed))


def jpeg_with_orientation(a: np.ndarray, orientation: int = 6) -> bytes:
    """A JPEG whose EXIF says 'rotate 90 deg CW to display' (orientation 6)."""
    exif = Image.Exif()
    exif[0x0112] = orientation
    return encode(a, "JPEG", quality=95, exif=exif.tobytes())


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_header_bomb(width: int = 50_000, height: int = 50_000) -> bytes:
    """A PNG whose IHDR declares width x height RGB pixels, with a tiny IDAT: the
    header alone would make a naive decoder allocate width*height*3 bytes."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")


def truncated_png() -> bytes:
    data = png_bytes(64, 64)
    return data[: len(data) // 2]


def zip_bytes(members: dict[str, bytes], compression: int = zipfile.ZIP_DEFLATED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def zip_with_symlink(link_name: str = "evil.png", target: str = "/etc/passwd") -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("ok.png", png_bytes())
        info = zipfile.ZipInfo(link_name)
        info.create_system = 3
        info.external_attr = (0o120777 << 16)
        zf.writestr(info, target)
    return buf.getvalue()


def zip_bomb(size: int, name: str = "bomb.png") -> bytes:
    """One highly compressible member of `size` bytes (a few KB compressed)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("ok.png", png_bytes())
        info = zipfile.ZipInfo(name)
        info.compress_type = zipfile.ZIP_DEFLATED
        with zf.open(info, "w", force_zip64=True) as f:
            block = b"\x00" * (1 << 20)
            left = size
            while left > 0:
                f.write(block[: min(left, len(block))])
                left -= len(block)
    return buf.getvalue()


def zip_lying_sizes(real_size: int, declared: int = 100) -> bytes:
    """A member whose headers claim `declared` bytes but whose deflate stream produces
    `real_size` bytes (headers patched after writing)."""
    payload = b"\x00" * real_size
    comp = zlib.compressobj(9, zlib.DEFLATED, -15)
    data = comp.compress(payload) + comp.flush()
    name = b"liar.png"
    crc = zlib.crc32(payload) & 0xFFFFFFFF
    local = struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, 0, 8, 0, 0, crc, len(data), declared, len(name), 0) + name
    central = struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 20, 20, 0, 8, 0, 0, crc, len(data), declared,
                          len(name), 0, 0, 0, 0, 0, 0) + name
    end = struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, 1, 1, len(central), len(local) + len(data), 0)
    return local + data + central + end


def tar_bytes(members: dict[str, bytes], mode: str = "w:gz", **tarfile_kw) -> bytes:
    """A tar of `members`; tarfile_kw go to tarfile.open (format=, encoding=)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode=mode, **tarfile_kw) as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def tar_with_link(kind: str = "sym", name: str = "evil.png", target: str = "/etc/passwd") -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        data = png_bytes()
        ok = tarfile.TarInfo("ok.png")
        ok.size = len(data)
        tf.addfile(ok, io.BytesIO(data))
        info = tarfile.TarInfo(name)
        info.type = tarfile.SYMTYPE if kind == "sym" else tarfile.LNKTYPE
        info.linkname = target
        tf.addfile(info)
    return buf.getvalue()


def lying_jpeg(h: int = 6000, w: int = 6000, progressive: bool = False) -> bytes:
    """A small 120x90 JPEG whose frame header (SOF0/SOF2) claims h x w."""
    buf = io.BytesIO()
    Image.fromarray(rgb_image(90, 120, seed=5)).save(buf, "JPEG", quality=50, progressive=progressive)
    data = buf.getvalue()
    i = data.find(b"\xff\xc2" if progressive else b"\xff\xc0")
    return data[:i + 5] + h.to_bytes(2, "big") + w.to_bytes(2, "big") + data[i + 9:]
