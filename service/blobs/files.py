"""A folder as a blob store: keys are relative paths under it. Writes go to a hidden temporary
file in the target's folder, then `os.replace`: an object exists complete or not at all."""
from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

from seam.service.blobs.base import BlobInfo, BlobNotFound, BlobStore, check_key

TMP_PREFIX = ".w-"  # in-progress writes: never listed


def atomic_write_chunks(path: Path, chunks: Iterable[bytes], tmp_dir: Path | None = None) -> None:
    """Write `chunks` to `path` so readers see either the old file or the new one complete: a
    hidden temporary file (in `tmp_dir`, default the target's folder: same file system) made
    durable, then `os.replace`. Also the job files' writer (storage.atomic_write)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp_dir = tmp_dir or path.parent
    tmp_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=tmp_dir, prefix=TMP_PREFIX, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            for chunk in chunks:
                f.write(chunk)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


class FileBlobStore(BlobStore):
    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.url = self.root.resolve().as_uri() if self.root.is_absolute() else self.root.as_posix()

    def path(self, key: str) -> Path:
        return self.root / check_key(key)

    def local_path(self, key: str) -> Path | None:
        return self.path(key)

    def put(self, key: str, data: bytes) -> None:
        self.put_stream(key, (data,))

    def put_stream(self, key: str, chunks: Iterable[bytes]) -> None:
        atomic_write_chunks(self.path(key), chunks)

    def get(self, key: str) -> bytes:
        try:
            return self.path(key).read_bytes()
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            raise BlobNotFound(key) from None

    def iter_bytes(self, key: str, chunk_size: int = 1 << 20) -> Iterator[bytes]:
        try:
            f = self.path(key).open("rb")
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            raise BlobNotFound(key) from None
        return _chunks(f, chunk_size)

    def exists(self, key: str) -> bool:
        return self.path(key).is_file()

    def list(self, prefix: str = "") -> Iterator[BlobInfo]:
        # the folder holding the prefix, walked in sorted order; keys filtered by the full prefix
        base = prefix.rsplit("/", 1)[0] if "/" in prefix else ""
        top = self.root / base if base else self.root
        yield from (info for info in _walk(self.root, top) if info.key.startswith(prefix))

    def children(self, prefix: str) -> Iterator[str]:
        top = self.root / prefix.rstrip("/") if prefix.strip("/") else self.root
        try:
            names = sorted(e.name for e in os.scandir(top) if not e.name.startswith(TMP_PREFIX))
        except (FileNotFoundError, NotADirectoryError):
            return
        yield from names

    def delete(self, key: str) -> None:
        with contextlib.suppress(FileNotFoundError, NotADirectoryError):
            self.path(key).unlink()


def _chunks(f, chunk_size: int) -> Iterator[bytes]:
    with f:
        while block := f.read(chunk_size):
            yield block


def _walk(root: Path, top: Path) -> Iterator[BlobInfo]:
    try:
        entries = sorted(os.scandir(top), key=lambda e: e.name)
    except (FileNotFoundError, NotADirectoryError):
        return
    # sorted by key: a folder's entries come where its name + "/" sorts
    for e in sorted(entries, key=lambda e: e.name + ("/" if e.is_dir(follow_symlinks=False) else "")):
        if e.name.startswith(TMP_PREFIX):
            continue
        if e.is_dir(follow_symlinks=False):
            yield from _walk(root, Path(e.path))
        elif e.is_file(follow_symlinks=False):
            try:
                st = e.stat(follow_symlinks=False)
            except FileNotFoundError:  # deleted meanwhile
                continue
            yield BlobInfo(Path(e.path).relative_to(root).as_posix(), st.st_size, st.st_mtime)
