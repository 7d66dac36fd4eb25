"""An S3-compatible bucket prefix as a blob store (AWS, MinIO, Ceph RGW, SeaweedFS, R2), through
boto3 (README "Dependencies and why", docs/storage.md: chosen by measurement).

Credentials come from boto3's standard chain (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY,
AWS_PROFILE and ~/.aws files, web identity, instance roles) and are never logged or put in a
URL. The endpoint: the one given (SEAM_S3_ENDPOINT_URL), else the standard AWS_ENDPOINT_URL_S3 /
AWS_ENDPOINT_URL variables (boto3 reads them itself), else AWS. With any custom endpoint the
requests are path-style (http://host/bucket/key): S3-compatible servers rarely have DNS per bucket.

Errors: a missing object is BlobNotFound; the server unreachable, timing out or answering 5xx /
SlowDown is BlobUnavailable, a ConnectionError, which job processing treats as transient (the
chunk is retried later); anything else (403, a bad bucket) propagates as it is.
"""
from __future__ import annotations

import io
import os
import threading
from collections.abc import Iterable, Iterator
from typing import Any

from seam.service.blobs.base import BlobInfo, BlobNotFound, BlobStore, S3Location, check_key

_MISSING = {"NoSuchKey", "404", "NotFound"}
_BUSY = {"SlowDown", "ServiceUnavailable", "InternalError", "RequestTimeout", "503", "500", "502", "504"}


class BlobUnavailable(ConnectionError):
    """The object store could not be reached or is overloaded: worth retrying later."""


# What a client is made of besides its arguments: the standard variables boto3 reads.
_CLIENT_ENV = ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL", "AWS_REGION", "AWS_DEFAULT_REGION", "AWS_PROFILE",
               "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_CONFIG_FILE",
               "AWS_SHARED_CREDENTIALS_FILE")
_clients: dict[tuple, Any] = {}
_clients_lock = threading.Lock()


def s3_client(endpoint_url: str | None = None, pool: int = 16) -> Any:
    """The process's thread-safe boto3 S3 client for these arguments and AWS_* variables (one
    made per request or submission would cost ~0.1 s and its own connection pool each). Per
    process id: a forked worker never shares its parent's sockets."""
    key = (os.getpid(), endpoint_url, pool, *(os.environ.get(v) for v in _CLIENT_ENV))
    with _clients_lock:
        if key not in _clients:
            _clients[key] = _new_client(endpoint_url, pool)
        return _clients[key]


def _new_client(endpoint_url: str | None, pool: int) -> Any:
    import boto3
    from botocore.config import Config

    endpoint = endpoint_url or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    config = Config(
        s3={"addressing_style": "path" if endpoint else "auto"},
        retries={"max_attempts": 4, "mode": "standard"}, connect_timeout=5, read_timeout=60,
        max_pool_connections=pool,
    )
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
    return boto3.session.Session().client("s3", endpoint_url=endpoint_url, region_name=region, config=config)


def translate(exc: Exception, key: str) -> Exception:
    """A boto error -> BlobNotFound / BlobUnavailable / itself (see the module docstring)."""
    from botocore.exceptions import (
        ClientError,
        ConnectionClosedError,
        ConnectTimeoutError,
        EndpointConnectionError,
        ReadTimeoutError,
    )

    if isinstance(exc, ClientError):
        code = str(exc.response.get("Error", {}).get("Code", ""))
        if code in _MISSING:
            return BlobNotFound(key)
        if code in _BUSY:
            return BlobUnavailable(f"object store busy ({code})")
        return exc
    if isinstance(exc, EndpointConnectionError | ConnectTimeoutError | ReadTimeoutError | ConnectionClosedError):
        return BlobUnavailable(f"object store unreachable: {type(exc).__name__}")
    return exc  # NoCredentialsError, a bad parameter: a configuration problem, not worth a retry


class _ChunkReader(io.RawIOBase):
    """A readable file over an iterator of byte chunks (boto3's managed upload reads files)."""

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self._it = iter(chunks)
        self._buf = b""

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        while not self._buf:
            try:
                self._buf = bytes(next(self._it))
            except StopIteration:
                return 0
        n = min(len(b), len(self._buf))
        b[:n] = self._buf[:n]
        self._buf = self._buf[n:]
        return n


class S3BlobStore(BlobStore):
    def __init__(self, location: S3Location, endpoint_url: str | None = None, client: Any = None) -> None:
        self.location = location
        self.bucket = location.bucket
        self.prefix = location.prefix
        self.url = location.uri().rstrip("/")
        self.client = client or s3_client(endpoint_url)

    def _key(self, key: str) -> str:
        return self.prefix + check_key(key)

    def _call(self, key: str, fn: Any, **kwargs: Any) -> Any:
        try:
            return fn(Bucket=self.bucket, **kwargs)
        except Exception as exc:  # noqa: BLE001 - translated, never swallowed
            raise translate(exc, key) from exc

    def put(self, key: str, data: bytes) -> None:
        self._call(key, self.client.put_object, Key=self._key(key), Body=data)

    def put_stream(self, key: str, chunks: Iterable[bytes]) -> None:
        # multipart above 8 MiB; the object appears only when the upload completes (atomic)
        full = self._key(key)
        try:
            self.client.upload_fileobj(io.BufferedReader(_ChunkReader(chunks), 1 << 20), self.bucket, full)
        except Exception as exc:  # noqa: BLE001
            raise translate(exc, key) from exc

    def get(self, key: str) -> bytes:
        resp = self._call(key, self.client.get_object, Key=self._key(key))
        with resp["Body"] as body:
            return body.read()

    def iter_bytes(self, key: str, chunk_size: int = 1 << 20) -> Iterator[bytes]:
        resp = self._call(key, self.client.get_object, Key=self._key(key))
        return _stream(resp["Body"], chunk_size, key)

    def exists(self, key: str) -> bool:
        try:
            self._call(key, self.client.head_object, Key=self._key(key))
        except BlobNotFound:
            return False
        return True

    def list(self, prefix: str = "") -> Iterator[BlobInfo]:
        pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=self.prefix + prefix)
        try:
            for page in pages:
                for obj in page.get("Contents", ()):
                    yield BlobInfo(obj["Key"][len(self.prefix):], int(obj["Size"]), obj["LastModified"].timestamp())
        except Exception as exc:  # noqa: BLE001
            raise translate(exc, prefix) from exc

    def any(self, prefix: str) -> bool:
        resp = self._call(prefix, self.client.list_objects_v2, Prefix=self.prefix + prefix, MaxKeys=1)
        return bool(resp.get("Contents"))

    def children(self, prefix: str) -> Iterator[str]:
        full = self.prefix + prefix
        pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=full, Delimiter="/")
        try:
            for page in pages:
                for common in page.get("CommonPrefixes", ()):
                    yield common["Prefix"][len(full):].rstrip("/")
                for obj in page.get("Contents", ()):
                    yield obj["Key"][len(full):]
        except Exception as exc:  # noqa: BLE001
            raise translate(exc, prefix) from exc

    def delete(self, key: str) -> None:
        self._call(key, self.client.delete_object, Key=self._key(key))

    def delete_prefix(self, prefix: str) -> int:
        n, batch = 0, []
        for info in self.list(prefix):
            batch.append({"Key": self.prefix + info.key})
            if len(batch) == 1000:  # DeleteObjects takes at most 1000 keys
                n += self._delete_batch(batch)
                batch = []
        if batch:
            n += self._delete_batch(batch)
        return n

    def _delete_batch(self, batch: list[dict]) -> int:
        self._call(batch[0]["Key"], self.client.delete_objects, Delete={"Objects": batch, "Quiet": True})
        return len(batch)

    def close(self) -> None:
        self.client.close()


def _stream(body: Any, chunk_size: int, key: str) -> Iterator[bytes]:
    with body:
        try:
            yield from body.iter_chunks(chunk_size)
        except Exception as exc:  # noqa: BLE001
            raise translate(exc, key) from exc
