"""Safe extraction of job archives (zip, tar, tar.gz/bz2/xz).

Hostile archives are refused as a whole with a 4xx naming the offending member:
paths escaping the root (`../`, absolute, drive letters), links, devices, sparse
tar members, duplicates, names that are not valid UTF-8 or too long for a file
system, too many members, a label table over its cap, and more uncompressed bytes
than allowed, counted both from the declared sizes (before extracting) and from the
bytes actually produced (while extracting), so a lying header cannot inflate a zip
bomb. The byte limit is the caller's: the smallest of SEAM_MAX_ARCHIVE_BYTES, the
expansion ratio times the upload, and what the data-directory quota has left.
"""
from __future__ import annotations

import errno
import lzma
import re
import stat
import tarfile
import zipfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from seam.service.core.errors import ApiError
from seam.service.inputs import sniff_archive

from seam.common.files import IMAGE_EXTENSIONS, LABEL_FILE_NAMES

_CHUNK = 1 << 20
_BAD_CHARS = re.compile(r"[\x00-\x1f\x7f]")
# Outputs are written as <image id>.<ext> (ext up to 5 bytes): keep names well inside
# NAME_MAX (255 bytes) and PATH_MAX so no later write can fail with ENAMETOOLONG.
MAX_NAME_PART_BYTES = 200
MAX_NAME_BYTES = 1024
_CORRUPT = (zipfile.BadZipFile, tarfile.TarError, EOFError, ValueError, NotImplementedError, RuntimeError,
            zlib.error, lzma.LZMAError, UnicodeError)


@dataclass
class Extracted:
    images: list[str] = field(default_factory=list)  # relative posix paths under dest
    labels_file: str | None = None
    skipped: dict[str, str] = field(default_factory=dict)  # members not extracted -> why (listed in errors.json)
    total_bytes: int = 0


def _refuse(message: str, status: int = 422, code: str = "invalid_archive") -> ApiError:
    return ApiError(status, code, message)


def check_name(rel: str, what: str = "archive member") -> None:
    """422 unless `rel` is valid UTF-8 (no lone surrogates from undecodable bytes) and
    short enough for every file name derived from it."""
    try:
        encoded = rel.encode("utf-8")
    except UnicodeEncodeError:
        raise _refuse(f"{what} {rel!r} has a name that is not valid UTF-8; rename it") from None
    if len(encoded) > MAX_NAME_BYTES or any(len(p.encode()) > MAX_NAME_PART_BYTES for p in rel.split("/")):
        raise _refuse(f"{what} {rel[:80]!r}... has a name longer than {MAX_NAME_PART_BYTES} bytes per folder "
                      f"or file name ({MAX_NAME_BYTES} in all); rename it")


def safe_member_path(name: str) -> str:
    """Normalised relative posix path of a member, or ApiError if it could escape the root."""
    if _BAD_CHARS.search(name):
        raise _refuse(f"archive member {name!r} has control characters in its name")
    n = name.replace("\\", "/")
    if n.startswith("/") or re.match(r"^[A-Za-z]:", n):
        raise _refuse(f"archive member {name!r} has an absolute path; only relative paths are accepted")
    parts = [p for p in n.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise _refuse(f"archive member {name!r} escapes the archive root ('..' in its path)")
    rel = "/".join(parts)
    check_name(rel)
    return rel


def _wanted(rel: str) -> tuple[str | None, str]:
    """('image' | 'labels', '') or (None, why the member is skipped)."""
    parts = rel.split("/")
    if any(p == "__MACOSX" for p in parts):
        return None, "macOS resource-fork metadata"
    if any(p.startswith(".") for p in parts):
        return None, "hidden file"
    name = parts[-1].lower()
    if name in LABEL_FILE_NAMES:
        return "labels", ""
    if Path(name).suffix in IMAGE_EXTENSIONS:
        return "image", ""
    return None, f"not an image by its extension (accepted: {', '.join(IMAGE_EXTENSIONS)})"


class _Extractor:
    def __init__(self, dest: Path, max_members: int, max_bytes: int, max_labels_bytes: int, why: str = "") -> None:
        self.why = f" ({why})" if why else ""
        self.dest = dest
        self.max_members = max_members
        self.max_bytes = max_bytes
        self.max_labels_bytes = max_labels_bytes
        self.members = 0
        self.declared = 0
        self.actual = 0
        self.seen: set[str] = set()
        self.out = Extracted()

    def count(self, name: str) -> None:
        self.members += 1
        if self.members > self.max_members:
            raise _refuse(f"archive has more than {self.max_members} members", 413, "archive_too_large")

    def declare(self, name: str, size: int) -> None:
        self.declared += max(size, 0)
        if self.declared > self.max_bytes:
            raise _refuse(f"archive would expand to more than {self.max_bytes} bytes (at member {name!r}); "
                          f"the limit is {self.max_bytes} bytes{self.why}", 413, "archive_too_large")

    def target(self, rel: str, original: str, size: int) -> Path | None:
        if rel in self.seen:
            raise _refuse(f"archive member {original!r} appears twice")
        self.seen.add(rel)
        kind, why = _wanted(rel)
        if kind is None:
            self.out.skipped[rel] = why
            return None
        if kind == "labels":
            if self.out.labels_file is not None:
                raise _refuse(f"archive has two label files ({self.out.labels_file!r} and {rel!r})")
            if size > self.max_labels_bytes:
                raise _refuse(f"label file {rel!r} is {size} bytes; the limit is {self.max_labels_bytes} bytes",
                              413, "labels_too_large")
            self.out.labels_file = rel
        else:
            self.out.images.append(rel)
        path = self.dest / rel
        if not path.resolve().is_relative_to(self.dest.resolve()):  # belt and braces
            raise _refuse(f"archive member {original!r} escapes the archive root")
        return path

    def copy(self, src: IO[bytes], path: Path, declared: int, original: str) -> None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            written = 0
            with open(path, "wb") as f:
                while True:
                    block = src.read(_CHUNK)
                    if not block:
                        break
                    written += len(block)
                    self.actual += len(block)
                    if written > declared:
                        raise _refuse(f"archive member {original!r} expands beyond its declared size "
                                      f"({declared} bytes); refusing a likely archive bomb", 413, "archive_too_large")
                    if self.actual > self.max_bytes:
                        raise _refuse(f"archive expands to more than {self.max_bytes} bytes; the limit is "
                                      f"{self.max_bytes} bytes{self.why}", 413, "archive_too_large")
                    f.write(block)
        except ApiError:
            raise
        except (NotADirectoryError, IsADirectoryError, FileExistsError):
            raise _refuse(f"archive member {original!r} conflicts with another member's path") from None
        except UnicodeEncodeError:
            raise _refuse(f"archive member {original!r} has an unencodable name") from None
        except OSError as exc:
            if exc.errno in (errno.ENAMETOOLONG, errno.EINVAL, errno.EILSEQ):
                raise _refuse(f"archive member {original!r} has an unusable name: {exc.strerror}") from None
            raise
        self.out.total_bytes += written


def _zip_is_link(info: zipfile.ZipInfo) -> bool:
    mode = info.external_attr >> 16
    return stat.S_ISLNK(mode)


def _extract_zip(fileobj: IO[bytes], ex: _Extractor) -> None:
    try:
        zf = zipfile.ZipFile(fileobj)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, EOFError, OSError) as exc:
        raise _refuse(f"not a readable zip archive: {exc}") from None
    with zf:
        infos = zf.infolist()
        # Check everything we can from the central directory before writing a byte.
        plan: list[tuple[zipfile.ZipInfo, str]] = []
        for info in infos:
            rel = safe_member_path(info.filename)
            if _zip_is_link(info):
                raise _refuse(f"archive member {info.filename!r} is a symbolic link; links are refused")
            ftype = stat.S_IFMT(info.external_attr >> 16)  # 0 when the zip carries no Unix file type
            if ftype and ftype not in (stat.S_IFREG, stat.S_IFDIR):
                raise _refuse(f"archive member {info.filename!r} is not a regular file")
            if info.is_dir() or not rel:
                continue
            ex.count(info.filename)
            if info.flag_bits & 0x1:
                raise _refuse(f"archive member {info.filename!r} is encrypted")
            ex.declare(info.filename, info.file_size)
            plan.append((info, rel))
        for info, rel in plan:
            path = ex.target(rel, info.filename, info.file_size)
            if path is None:
                continue
            with _corrupt_refused(f"archive member {info.filename!r}"), zf.open(info) as src:
                ex.copy(src, path, info.file_size, info.filename)


@contextmanager
def _corrupt_refused(what: str) -> Iterator[None]:
    """A damaged archive is the sender's fault: 422 naming `what`, never a 500."""
    try:
        yield
    except ApiError:
        raise
    except _CORRUPT as exc:
        raise _refuse(f"{what} is corrupt: {exc}") from None
    except OSError as exc:
        if exc.errno is None:  # zlib/bz2/lzma stream errors carry no errno; disk errors do
            raise _refuse(f"{what} is corrupt: {exc}") from None
        raise


def _tar_members(tf: tarfile.TarFile) -> Iterator[tarfile.TarInfo]:
    while True:
        m = tf.next()
        if m is None:
            return
        yield m


def _extract_tar(fileobj: IO[bytes], ex: _Extractor) -> None:
    try:
        # Names are decoded as UTF-8 with surrogateescape: undecodable bytes become lone
        # surrogates, which check_name refuses (never stored, never half-encoded).
        tf = tarfile.open(fileobj=fileobj, mode="r:*", encoding="utf-8", errors="surrogateescape")  # noqa: SIM115 - `with tf` below
    except (*_CORRUPT, OSError) as exc:
        raise _refuse(f"not a readable tar archive: {exc}") from None
    with tf, _corrupt_refused("tar archive"):
        for m in _tar_members(tf):
            rel = safe_member_path(m.name)
            if m.issym() or m.islnk():
                raise _refuse(f"archive member {m.name!r} is a {'symbolic' if m.issym() else 'hard'} link "
                              f"(to {m.linkname!r}); links are refused")
            if m.isdir() or not rel:
                continue
            if not m.isfile():
                raise _refuse(f"archive member {m.name!r} is not a regular file")
            if m.issparse():
                # A few KiB of sparse map can stand for gigabytes of zeros on disk.
                raise _refuse(f"archive member {m.name!r} is a sparse file; sparse tar members are refused")
            ex.count(m.name)
            ex.declare(m.name, m.size)
            path = ex.target(rel, m.name, m.size)
            if path is None:
                continue
            src = tf.extractfile(m)
            if src is None:
                raise _refuse(f"archive member {m.name!r} cannot be read")
            with src:
                ex.copy(src, path, m.size, m.name)


def extract_archive(fileobj: IO[bytes], dest: Path, max_members: int, max_bytes: int,
                    max_labels_bytes: int = 16 << 20, why: str = "") -> Extracted:
    """Extract the images (and one labels.csv/json) of a zip or tar into `dest`."""
    fileobj.seek(0)
    head = fileobj.read(512)
    fileobj.seek(0)
    kind = sniff_archive(head)
    if kind is None:
        raise _refuse("the upload is not a zip or tar archive (detected by content)", 415, "unsupported_media_type")
    dest.mkdir(parents=True, exist_ok=True)
    ex = _Extractor(dest, max_members, max_bytes, max_labels_bytes, why)
    if kind == "zip":
        _extract_zip(fileobj, ex)
    else:
        _extract_tar(fileobj, ex)
    if not ex.out.images:
        raise _refuse(f"the archive holds no images ({', '.join(IMAGE_EXTENSIONS)})")
    return ex.out
