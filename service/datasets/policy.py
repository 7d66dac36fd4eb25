"""Which data-set URLs a job may name: the rules of the Label Studio fetcher for URLs
(integrations/fetch.py), applied to job inputs and outputs.

- s3://bucket/prefix: only under an entry of SEAM_DATASET_BUCKETS (`bucket` or `bucket/prefix`);
  the storage bucket is not implied: job files and users' data sets are separate grants.
- http(s)://host[:port]/...: only hosts of SEAM_DATASET_HTTP_HOSTS, no user-info; every address the
  host resolves to must be public unless SEAM_DATASET_ALLOW_PRIVATE; the connection goes to the
  checked address; redirects are not followed (datasets.fetching).
- anything else (file:, ftp:, gs:...) is refused.

UrlRefused (a ValueError) says why; the API answers it with 403/422, a manifest line with a
per-line error.
"""
from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from seam.service.blobs.base import S3Location, parse_s3_url


class UrlRefused(ValueError):
    """The URL may not be used (scheme, bucket, host, address); nothing was requested."""


def system_resolver(host: str, port: int) -> list[str]:
    return [info[4][0] for info in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)]


def _short(url: str, n: int = 160) -> str:
    return url if len(url) <= n else url[:n] + "..."


@dataclass
class DatasetPolicy:
    buckets: Sequence[str] = ()
    http_hosts: Sequence[str] = ()
    allow_private: bool = False
    resolver: Callable[[str, int], list[str]] = field(default=system_resolver, repr=False)

    @classmethod
    def from_settings(cls, settings: object) -> DatasetPolicy:
        return cls(list(getattr(settings, "dataset_buckets", ())), list(getattr(settings, "dataset_http_hosts", ())),
                   bool(getattr(settings, "dataset_allow_private", False)))

    def check_s3(self, url: str) -> S3Location:
        """The location of an allowed s3:// URL (an object or a prefix)."""
        try:
            loc = parse_s3_url(url)
        except ValueError as exc:
            raise UrlRefused(str(exc)) from None
        # an object URL's "prefix" ends with / added by the parser: compare on the raw key too
        key = loc.prefix
        for entry in self.buckets:
            bucket, _, prefix = entry.strip().strip("/").partition("/")
            if bucket != loc.bucket:
                continue
            if not prefix or key.startswith(prefix.rstrip("/") + "/"):
                return loc
        if not self.buckets:
            raise UrlRefused("s3:// data sets are disabled on this server (set SEAM_DATASET_BUCKETS)")
        raise UrlRefused(f"{_short(url)} is not under a bucket/prefix of SEAM_DATASET_BUCKETS")

    def check_http(self, url: str) -> tuple[str, int, str]:
        """(host, port, address to connect to) of an allowed http(s) URL."""
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https"):
            raise UrlRefused(f"unsupported URL scheme in {_short(url)!r}: use s3:// or http(s)://")
        if parts.username is not None or parts.password is not None or "@" in parts.netloc:
            raise UrlRefused("URLs with user-info are not allowed")
        try:
            host = (parts.hostname or "").lower()
            port = parts.port or (443 if parts.scheme == "https" else 80)
        except ValueError as exc:
            raise UrlRefused(f"malformed URL: {exc}") from None
        if not host:
            raise UrlRefused(f"no host in {_short(url)!r}")
        if not self._allowed_host(host, port):
            if not self.http_hosts:
                raise UrlRefused("http(s) data sets are disabled on this server (set SEAM_DATASET_HTTP_HOSTS)")
            raise UrlRefused(f"host {host}:{port} is not one of SEAM_DATASET_HTTP_HOSTS")
        try:
            addrs = list(self.resolver(host, port))
        except (OSError, UnicodeError) as exc:
            raise UrlRefused(f"cannot resolve {host}: {exc}") from None
        if not addrs:
            raise UrlRefused(f"{host} resolves to no address")
        for a in addrs:
            ip = ipaddress.ip_address(a.split("%", 1)[0])
            if not ip.is_global and not self.allow_private:
                raise UrlRefused(f"{host} resolves to the non-public address {ip}; set SEAM_DATASET_ALLOW_PRIVATE=true "
                                 "if the data set is served on a private network")
            if ip.is_multicast or ip.is_unspecified:
                raise UrlRefused(f"{host} resolves to the unusable address {ip}")
        return host, port, addrs[0]

    def _allowed_host(self, host: str, port: int) -> bool:
        for entry in self.http_hosts:
            e = entry.strip().lower()
            if ":" in e and not e.startswith("["):
                h, _, p = e.rpartition(":")
                if h == host and p.isdigit() and int(p) == port:
                    return True
            elif e and e == host:
                return True
        return False

    def check(self, url: str) -> str:
        """'s3' or 'http' for an allowed URL, else UrlRefused."""
        scheme = urlsplit(url).scheme.lower()
        if scheme == "s3":
            self.check_s3(url)
            return "s3"
        self.check_http(url)
        return "http"
