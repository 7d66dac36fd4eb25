"""Which data-set URLs a job may name: the service's URL rules (core/urlrules.py, which the
Label Studio fetcher applies too) with the data sets' own allow-lists, for job inputs and outputs.

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

from collections.abc import Sequence
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from seam.service.blobs.base import S3Location, parse_s3_url
from seam.service.core.urlrules import (
    Origin,
    Resolver,
    UrlRefused,
    checked_address,
    host_listed,
    short,
    system_resolver,
)

__all__ = ["DatasetPolicy", "UrlRefused", "system_resolver"]


@dataclass
class DatasetPolicy:
    buckets: Sequence[str] = ()
    http_hosts: Sequence[str] = ()
    allow_private: bool = False
    resolver: Resolver = field(default=system_resolver, repr=False)

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
        raise UrlRefused(f"{short(url, 160)} is not under a bucket/prefix of SEAM_DATASET_BUCKETS")

    def check_http(self, url: str) -> tuple[str, int, str]:
        """(host, port, address to connect to) of an allowed http(s) URL."""
        if urlsplit(url).scheme.lower() not in ("http", "https"):  # said here: a data set may also be s3://
            raise UrlRefused(f"unsupported URL scheme in {short(url, 160)!r}: use s3:// or http(s)://")
        origin = Origin.of(url)
        if not host_listed(self.http_hosts, origin.host, origin.port):
            if not self.http_hosts:
                raise UrlRefused("http(s) data sets are disabled on this server (set SEAM_DATASET_HTTP_HOSTS)")
            raise UrlRefused(f"host {origin.netloc()} is not one of SEAM_DATASET_HTTP_HOSTS")
        addr = checked_address(origin.host, origin.port, self.resolver, self.allow_private,
                               "set SEAM_DATASET_ALLOW_PRIVATE=true if the data set is served on a private network")
        return origin.host, origin.port, addr

    def check(self, url: str) -> str:
        """'s3' or 'http' for an allowed URL, else UrlRefused."""
        scheme = urlsplit(url).scheme.lower()
        if scheme == "s3":
            self.check_s3(url)
            return "s3"
        self.check_http(url)
        return "http"
