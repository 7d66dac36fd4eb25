"""Fetching task images from one configured Label Studio, and from nowhere else.

A `/predict` payload names image URLs; fetching whatever it names would make the server
an open proxy into its own network (SSRF). So:

- only http(s), no user-info in URLs;
- only the configured Label Studio origin (scheme, host, port), plus hosts the operator
  lists explicitly (e.g. the bucket a presigned cloud-storage URL redirects to); the API key
  is only ever sent to the Label Studio origin;
- every address a host name resolves to must be public unless private addresses are allowed,
  and the connection goes to the address that was checked (no DNS rebinding between check and
  connect; TLS still verifies the certificate for the host name);
- redirects are followed by hand, each hop checked the same way;
- the body is streamed and cut at the upload limit.
"""
from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from urllib.parse import quote, urljoin, urlsplit

import httpx

_CLOUD_SCHEMES = ("s3:", "gs:", "azure-blob:", "azure-spi:")
_REDIRECTS = (301, 302, 303, 307, 308)


class UrlRefused(ValueError):
    """The URL may not be fetched (scheme, host, address); nothing was requested."""


class FetchFailed(RuntimeError):
    """The request was allowed but did not give an image (status, size, network)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


Resolver = Callable[[str, int], Sequence[str]]


def system_resolver(host: str, port: int) -> list[str]:
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


@dataclass(frozen=True)
class Origin:
    scheme: str
    host: str
    port: int

    @classmethod
    def of(cls, url: str) -> Origin:
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme not in ("http", "https"):
            raise UrlRefused(f"scheme {parts.scheme or '(none)'!r} is not allowed (only http and https)")
        if parts.username or parts.password:
            raise UrlRefused("URLs with user:password@ are not allowed")
        if not parts.hostname:
            raise UrlRefused("the URL has no host")
        try:
            port = parts.port or (443 if scheme == "https" else 80)
        except ValueError as exc:
            raise UrlRefused(f"bad port: {exc}") from None
        return cls(scheme, parts.hostname.lower().rstrip("."), port)

    def netloc(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass
class FetchPolicy:
    """Where images may come from. `base_url`: the Label Studio URL; `extra_hosts`:
    `host` or `host:port` entries also allowed (no API key is sent there)."""

    base_url: str
    api_key: str | None = None
    allow_private: bool = False
    extra_hosts: Sequence[str] = ()
    max_bytes: int = 20 * 1024 * 1024
    timeout_s: float = 20.0
    max_redirects: int = 3
    resolver: Resolver = field(default=system_resolver, repr=False)

    def __post_init__(self) -> None:
        self.base = Origin.of(self.base_url)
        self.base_url = self.base_url.rstrip("/")

    # --- URL decisions (no network beyond DNS) ----------------------------------
    def absolute(self, raw: str, task_id: object = None) -> str:
        """A task's image reference -> the absolute URL to request (not yet checked)."""
        ref = (raw or "").strip()
        if not ref:
            raise UrlRefused("the task has no image URL")
        low = ref.lower()
        if low.startswith(_CLOUD_SCHEMES):
            # Label Studio signs cloud-storage URIs for the task (as label_studio_sdk does)
            if task_id is None:
                raise UrlRefused("a cloud-storage URI needs the task id to be resolved by Label Studio")
            return f"{self.base_url}/tasks/{quote(str(task_id), safe='')}/presign/?fileuri={quote(ref, safe='')}"
        if low.startswith(("upload/", "data/", "storage-data/")):
            ref = "/" + ref
        if ref.startswith("/upload/"):
            ref = "/data" + ref
        if ref.startswith("//"):
            raise UrlRefused("scheme-relative URLs are not allowed")
        if ref.startswith("/"):
            return urljoin(self.base_url + "/", ref.lstrip("/"))
        return ref

    def is_base(self, origin: Origin) -> bool:
        return origin == self.base

    def _allowed_origin(self, origin: Origin) -> bool:
        if self.is_base(origin):
            return True
        for entry in self.extra_hosts:
            e = entry.strip().lower()
            if not e:
                continue
            if ":" in e and not e.startswith("["):
                host, _, port = e.rpartition(":")
                if host == origin.host and port.isdigit() and int(port) == origin.port:
                    return True
            elif e == origin.host:
                return True
        return False

    def check(self, url: str) -> tuple[Origin, str]:
        """(origin, address to connect to) or UrlRefused with the reason."""
        origin = Origin.of(url)
        if not self._allowed_origin(origin):
            raise UrlRefused(f"host {origin.netloc()} is not the configured Label Studio ({self.base.netloc()}) "
                             "nor one of SEAM_LABELSTUDIO_EXTRA_HOSTS")
        try:
            addrs = list(self.resolver(origin.host, origin.port))
        except (OSError, UnicodeError) as exc:
            raise UrlRefused(f"cannot resolve {origin.host}: {exc}") from None
        if not addrs:
            raise UrlRefused(f"{origin.host} resolves to no address")
        for a in addrs:
            ip = ipaddress.ip_address(a.split("%", 1)[0])
            if not ip.is_global and not self.allow_private:
                raise UrlRefused(f"{origin.host} resolves to the non-public address {ip}; set "
                                 "SEAM_LABELSTUDIO_ALLOW_PRIVATE=true if Label Studio runs on a private network")
            if ip.is_multicast or ip.is_unspecified:
                raise UrlRefused(f"{origin.host} resolves to the unusable address {ip}")
        return origin, addrs[0]

    # --- fetching ------------------------------------------------------------------
    def _auth(self) -> dict[str, str]:
        if not self.api_key:
            return {}
        # Label Studio's personal access tokens are JWTs (Bearer); legacy tokens use "Token"
        scheme = "Bearer" if self.api_key.count(".") == 2 else "Token"
        return {"Authorization": f"{scheme} {self.api_key}"}

    def fetch(self, url: str, client: httpx.Client | None = None) -> bytes:
        """GET `url` (already made absolute) within the policy; returns the body."""
        own = client is None
        client = client or httpx.Client(timeout=self.timeout_s, follow_redirects=False, trust_env=False)
        try:
            for _hop in range(self.max_redirects + 1):
                origin, addr = self.check(url)
                resp = self._send(client, url, origin, addr)
                try:
                    if resp.status_code in _REDIRECTS:
                        loc = resp.headers.get("location")
                        if not loc:
                            raise FetchFailed(f"redirect without a Location from {origin.netloc()}", resp.status_code)
                        url = urljoin(url, loc)
                        continue
                    if resp.status_code != 200:
                        raise FetchFailed(f"Label Studio answered HTTP {resp.status_code} for the image "
                                          f"({_short(url)})", resp.status_code)
                    return self._read_limited(resp)
                finally:
                    resp.close()
            raise FetchFailed(f"more than {self.max_redirects} redirects fetching the image")
        except httpx.HTTPError as exc:
            raise FetchFailed(f"could not fetch the image from {urlsplit(url).netloc}: {exc}") from None
        finally:
            if own:
                client.close()

    def _send(self, client: httpx.Client, url: str, origin: Origin, addr: str) -> httpx.Response:
        u = httpx.URL(url)
        default = 443 if origin.scheme == "https" else 80
        headers = {"Host": origin.host if origin.port == default else origin.netloc(), "Accept": "image/*"}
        if self.is_base(origin):
            headers.update(self._auth())
        ext = {"sni_hostname": origin.host} if origin.scheme == "https" else {}
        req = client.build_request("GET", u.copy_with(host=addr), headers=headers, extensions=ext)
        return client.send(req, stream=True)

    def _read_limited(self, resp: httpx.Response) -> bytes:
        declared = resp.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > self.max_bytes:
            raise FetchFailed(f"the image is {declared} bytes, over the limit of {self.max_bytes}", 413)
        buf = bytearray()
        for chunk in resp.iter_bytes():
            buf += chunk
            if len(buf) > self.max_bytes:
                raise FetchFailed(f"the image is larger than the limit of {self.max_bytes} bytes", 413)
        return bytes(buf)


def _short(url: str, n: int = 120) -> str:
    return url if len(url) <= n else url[:n] + "..."
