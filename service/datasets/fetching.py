"""Reading a data set's objects: the bytes of one image URI, or a manifest as a stream of chunks.
Every URL is checked by the policy first (also on the workers: a chunk file is not trusted more
than a request). s3:// through one boto3 client per process (blobs.s3); http(s) with httpx to the
address the policy checked (TLS still verifies the host name), no redirects, a size cap."""
from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

from seam.service.blobs.base import S3Location
from seam.service.blobs.s3 import S3BlobStore, s3_client
from seam.service.core.urlrules import UrlRefused
from seam.service.datasets.policy import DatasetPolicy


class FetchFailed(RuntimeError):
    """The URL was allowed, but its object could not be read (missing, too large, HTTP error)."""


class DatasetReader:
    def __init__(self, policy: DatasetPolicy, endpoint_url: str | None = None, max_bytes: int = 64 << 20,
                 timeout_s: float = 30.0) -> None:
        self.policy = policy
        self.endpoint_url = endpoint_url
        self.max_bytes = max_bytes
        self.timeout_s = timeout_s
        self._client: Any = None
        self._lock = threading.Lock()

    def bucket(self, loc: S3Location) -> S3BlobStore:
        with self._lock:
            if self._client is None:
                self._client = s3_client(self.endpoint_url)
        return S3BlobStore(S3Location(loc.bucket, ""), client=self._client)

    def prefix_store(self, url: str) -> S3BlobStore:
        """A store rooted at an allowed s3:// prefix (a job's output_url)."""
        loc = self.policy.check_s3(url if url.endswith("/") else url + "/")
        self.bucket(loc)  # makes the shared client
        return S3BlobStore(loc, client=self._client)

    def s3_object(self, uri: str) -> tuple[S3BlobStore, str]:
        loc = self.policy.check_s3(uri)
        key = loc.prefix.rstrip("/")
        if not key:
            raise UrlRefused(f"{uri[:160]} names a bucket, not an object")
        return self.bucket(loc), key

    def read(self, uri: str) -> bytes:
        """The whole object (an image): FileNotFoundError when missing, UrlRefused, FetchFailed."""
        if uri.lower().startswith("s3://"):
            store, key = self.s3_object(uri)
            return store.get(key)
        return b"".join(self._http(uri, self.max_bytes))

    def stream(self, uri: str, max_bytes: int | None = None) -> Iterator[bytes]:
        """The object in chunks as they arrive (a manifest)."""
        if uri.lower().startswith("s3://"):
            store, key = self.s3_object(uri)
            return store.iter_bytes(key)
        return self._http(uri, max_bytes)

    def _http(self, uri: str, max_bytes: int | None) -> Iterator[bytes]:
        import httpx
        from seam.service.core.http import outbound_client

        host, port, addr = self.policy.check_http(uri)
        client = outbound_client(self.timeout_s)
        # connect to the checked address; the Host header and TLS SNI keep the host name
        target = httpx.URL(uri)
        request = client.build_request("GET", target.copy_with(host=addr), headers={"Host": target.netloc.decode()},
                                       extensions={"sni_hostname": host})
        try:
            resp = client.send(request, stream=True)
        except httpx.HTTPError as exc:
            client.close()
            raise FetchFailed(f"could not fetch {uri[:160]}: {type(exc).__name__}") from None
        if resp.status_code == 404:
            resp.close()
            client.close()
            raise FileNotFoundError(uri)
        if resp.status_code != 200:
            resp.close()
            client.close()
            raise FetchFailed(f"HTTP {resp.status_code} for {uri[:160]} (redirects are not followed)")
        return _body(client, resp, max_bytes, uri)


def _body(client: Any, resp: Any, max_bytes: int | None, uri: str) -> Iterator[bytes]:
    n = 0
    try:
        for chunk in resp.iter_bytes(1 << 20):
            n += len(chunk)
            if max_bytes is not None and n > max_bytes:
                raise FetchFailed(f"{uri[:160]} is larger than {max_bytes} bytes")
            yield chunk
    finally:
        resp.close()
        client.close()
