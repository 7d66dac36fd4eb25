"""Opening the blob store a URL names:

    open_blob_store("file:///srv/seam")                -> FileBlobStore
    open_blob_store("s3://bucket/some/prefix", ...)    -> S3BlobStore
"""
from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote, urlsplit

from seam.service.blobs.base import BlobStore, parse_s3_url
from seam.service.blobs.files import FileBlobStore
from seam.service.blobs.s3 import S3BlobStore


def open_blob_store(url: str, endpoint_url: str | None = None) -> BlobStore:
    """The store a URL names: `file:///path` or `s3://bucket/prefix` (endpoint: an S3-compatible
    server; None = the standard AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL variables, else AWS)."""
    scheme = urlsplit(url).scheme
    if scheme == "file":
        return FileBlobStore(file_url_path(url))
    if scheme == "s3":
        return S3BlobStore(parse_s3_url(url), endpoint_url)
    raise ValueError(f"unsupported storage URL {url[:200]!r}: use file:///path or s3://bucket/prefix")


def file_url_path(url: str) -> Path:
    parts = urlsplit(url)
    if parts.netloc not in ("", "localhost"):
        raise ValueError(f"a file:// URL names no host: {url[:200]!r}")
    path = Path(unquote(parts.path))
    if not path.is_absolute():
        raise ValueError(f"a file:// URL needs an absolute path: {url[:200]!r}")
    return path
