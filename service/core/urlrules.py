"""The rules every outbound http(s) URL of the service passes, whoever fetches it (Label
Studio's images in integrations/fetch.py, users' data sets in datasets/policy.py):

- `Origin.of`: only http(s), no control characters, no user-info, a host, a valid port, and
  nothing httpx would refuse when sending;
- `host_listed`: the operator's allow-list, entries `host` (any port) or `host:port`;
- `checked_address`: every address the host resolves to must be public (unless private ones are
  allowed) and none multicast or unspecified; the caller connects to the address returned, so
  DNS cannot change between the check and the connection.

Each caller words its own refusals about its settings (`hint`): the rules live here once.
"""
from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

import httpx


class UrlRefused(ValueError):
    """The URL may not be used (scheme, bucket, host, address); nothing was requested."""


Resolver = Callable[[str, int], Sequence[str]]


def system_resolver(host: str, port: int) -> list[str]:
    """The addresses `host` resolves to, each once, in the resolver's order."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def short(url: str, n: int = 120) -> str:
    """A URL cut for a message (a refused URL may be megabytes long)."""
    return url if len(url) <= n else url[:n] + "..."


@dataclass(frozen=True)
class Origin:
    scheme: str
    host: str
    port: int

    @classmethod
    def of(cls, url: str) -> Origin:
        """The origin of an http(s) URL, or UrlRefused with the reason."""
        if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in url):
            raise UrlRefused("the URL contains control characters")
        try:
            parts = urlsplit(url)
        except ValueError as exc:  # e.g. an unclosed IPv6 bracket
            raise UrlRefused(f"malformed URL: {exc}") from None
        scheme = parts.scheme.lower()
        if scheme not in ("http", "https"):
            raise UrlRefused(f"scheme {parts.scheme or '(none)'!r} is not allowed (only http and https)")
        # "http://@host/" has an empty user-info: refused too (parsers disagree on such URLs)
        if parts.username is not None or parts.password is not None or "@" in parts.netloc:
            raise UrlRefused("URLs with user-info (user:password@) are not allowed")
        if not parts.hostname:
            raise UrlRefused("the URL has no host")
        try:
            port = parts.port or (443 if scheme == "https" else 80)
        except ValueError as exc:
            raise UrlRefused(f"bad port: {exc}") from None
        try:  # what httpx would refuse when sending must be refused here, before anything is fetched
            httpx.URL(url)
        except httpx.InvalidURL as exc:
            raise UrlRefused(f"malformed URL: {exc}") from None
        return cls(scheme, parts.hostname.lower().rstrip("."), port)

    def netloc(self) -> str:
        return f"{self.host}:{self.port}"


def host_listed(entries: Iterable[str], host: str, port: int) -> bool:
    """Whether `host:port` is allowed by an entry `host` (any port) or `host:port`."""
    for entry in entries:
        e = entry.strip().lower()
        if not e:
            continue
        if ":" in e and not e.startswith("["):
            h, _, p = e.rpartition(":")
            if h == host and p.isdigit() and int(p) == port:
                return True
        elif e == host:
            return True
    return False


def checked_address(host: str, port: int, resolver: Resolver, allow_private: bool, hint: str) -> str:
    """The address to connect to for `host`, once every address it resolves to passed; `hint`
    ends the non-public refusal (which setting allows private addresses)."""
    try:
        addrs = list(resolver(host, port))
    except (OSError, UnicodeError) as exc:
        raise UrlRefused(f"cannot resolve {host}: {exc}") from None
    if not addrs:
        raise UrlRefused(f"{host} resolves to no address")
    for a in addrs:
        ip = ipaddress.ip_address(a.split("%", 1)[0])
        if not ip.is_global and not allow_private:
            raise UrlRefused(f"{host} resolves to the non-public address {ip}; {hint}")
        if ip.is_multicast or ip.is_unspecified:
            raise UrlRefused(f"{host} resolves to the unusable address {ip}")
    return addrs[0]
