"""The blob-store interface and its URLs.

A blob store holds objects under `/`-separated keys relative to its root (a folder, or a
bucket + prefix). Every write is atomic per object: readers see the old object or the new one
complete (a file is renamed into place; an S3 PUT is atomic). Listing is recursive and sorted.

(`seam.service.blobs.stores.open_blob_store` opens the store a URL names.)
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit


class BlobNotFound(FileNotFoundError):
    """No object under that key (a FileNotFoundError: callers written for files keep working)."""


@dataclass(frozen=True)
class BlobInfo:
    key: str  # relative to the store's root
    size: int
    mtime: float  # seconds since the epoch


@dataclass(frozen=True)
class S3Location:
    bucket: str
    prefix: str  # "" or "a/b/" (always ends with / when not empty)

    def uri(self, key: str = "") -> str:
        return f"s3://{self.bucket}/{self.prefix}{key}"


def parse_s3_url(url: str) -> S3Location:
    """`s3://bucket[/prefix]` -> S3Location; ValueError naming what is wrong."""
    parts = urlsplit(url)
    if parts.scheme != "s3":
        raise ValueError(f"not an s3:// URL: {url[:200]!r}")
    if parts.query or parts.fragment or "@" in parts.netloc:
        raise ValueError("an s3:// URL has no query, fragment or user-info")
    bucket = parts.netloc
    if not (3 <= len(bucket) <= 63) or not all(c.isalnum() or c in "-." for c in bucket) or bucket != bucket.lower():
        raise ValueError(f"bad bucket name {bucket[:80]!r} (3-63 lowercase letters, digits, '-', '.')")
    prefix = unquote(parts.path).lstrip("/")
    if any(p in (".", "..") for p in prefix.split("/")) or "\x00" in prefix:
        raise ValueError("an s3:// prefix may not contain '.' or '..' segments")
    if prefix and not prefix.endswith("/"):
        prefix += "/"
    return S3Location(bucket, prefix)


def check_key(key: str) -> str:
    """A relative key with no empty, '.' or '..' segment (nothing can leave the store's root)."""
    if not key or key.startswith("/") or "\x00" in key or "\\" in key:
        raise ValueError(f"bad key {key[:200]!r}")
    if any(p in ("", ".", "..") for p in key.split("/")):
        raise ValueError(f"bad key {key[:200]!r}")
    return key


class BlobStore(ABC):
    """Objects under keys; see the module docstring."""

    url: str  # the store's root as a URL (no credentials in it)

    @abstractmethod
    def put(self, key: str, data: bytes) -> None:
        """Write the object atomically (replacing any old one)."""

    @abstractmethod
    def put_stream(self, key: str, chunks: Iterable[bytes]) -> None:
        """Write an object of unknown size from chunks without holding it whole; atomic."""

    @abstractmethod
    def get(self, key: str) -> bytes:
        """The object's bytes; BlobNotFound when there is none."""

    @abstractmethod
    def iter_bytes(self, key: str, chunk_size: int = 1 << 20) -> Iterator[bytes]:
        """The object's bytes in chunks, as they arrive; BlobNotFound when there is none."""

    @abstractmethod
    def exists(self, key: str) -> bool: ...

    @abstractmethod
    def list(self, prefix: str = "") -> Iterator[BlobInfo]:
        """Every object whose key starts with `prefix`, sorted by key, fetched page by page."""

    @abstractmethod
    def children(self, prefix: str) -> Iterator[str]:
        """Names one level below `prefix` (which ends with /): objects and 'folders' alike."""

    def any(self, prefix: str) -> bool:
        """Whether any object's key starts with `prefix` (an empty 'folder' some servers keep is none)."""
        return next(iter(self.list(prefix)), None) is not None

    @abstractmethod
    def delete(self, key: str) -> None:
        """Remove the object; no error when there is none."""

    def delete_prefix(self, prefix: str) -> int:
        """Remove every object under `prefix` (a 'folder': give it with its trailing /); how many."""
        n = 0
        for info in list(self.list(prefix)):
            self.delete(info.key)
            n += 1
        return n

    def uri(self, key: str) -> str:
        """The object's URL (s3://bucket/prefix/key or file:///path/key)."""
        return f"{self.url.rstrip('/')}/{key}"

    def local_path(self, key: str) -> Path | None:
        """The object's file when the store is a folder (readers may open it in place), else None."""
        return None

    def close(self) -> None:  # noqa: B027 - optional: a backend with connections closes them
        pass
