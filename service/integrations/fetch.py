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

Label Studio's tokens: a legacy token is sent as `Authorization: Token <key>`; a personal
access token (a JWT refresh token) is not accepted by Label Studio's API as it is: it is
exchanged at `<Label Studio>/api/token/refresh/` for a short-lived access token (5 minutes by
default), sent as `Bearer`, cached per process and exchanged again before it expires or when
Label Studio answers 401.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import json
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import quote, urljoin, urlsplit

import httpx
from seam.service.core.http import outbound_client
from seam.service.core.urlrules import (
    Origin,
    Resolver,
    UrlRefused,
    checked_address,
    host_listed,
    short,
    system_resolver,
)

_CLOUD_SCHEMES = ("s3:", "gs:", "azure-blob:", "azure-spi:")
_REDIRECTS = (301, 302, 303, 307, 308)
# Label Studio's /data/upload answers 406 to a bare `image/*` (its content negotiation knows no
# image renderer); the wildcard fallback gets the file, and other servers still prefer an image.
ACCEPT = "image/*, */*;q=0.8"
TOKEN_REFRESH_PATH = "/api/token/refresh/"
# an access token this close to its expiry is exchanged again before use (clock skew, slow fetch)
TOKEN_MARGIN_S = 30.0


class FetchFailed(RuntimeError):
    """The request was allowed but did not give an image (status, size, network)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


TokenKind = Literal["legacy", "access", "refresh"]


def _jwt_payload(token: str) -> dict | None:
    parts = token.split(".")
    if len(parts) != 3:
        return None
    try:
        payload = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except (binascii.Error, ValueError, UnicodeDecodeError):
        return None
    return payload if isinstance(payload, dict) else None


def token_kind(token: str) -> TokenKind:
    """A Label Studio token's kind: JWTs say so in their payload (`token_type`); anything else
    is a legacy token. Personal access tokens are refresh tokens."""
    payload = _jwt_payload(token)
    if payload is None:
        return "legacy"
    return "refresh" if payload.get("token_type") == "refresh" else "access"


class AccessTokens:
    """Access tokens obtained for personal access tokens, per (Label Studio URL, token digest),
    until shortly before their `exp`. Shared by the threads of one process."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._tokens: dict[tuple[str, str], tuple[str, float]] = {}
        self._lock = threading.Lock()
        self._clock = clock

    def get(self, key: tuple[str, str]) -> str | None:
        with self._lock:
            hit = self._tokens.get(key)
        if hit and self._clock() < hit[1] - TOKEN_MARGIN_S:
            return hit[0]
        return None

    def put(self, key: tuple[str, str], token: str) -> None:
        exp = (_jwt_payload(token) or {}).get("exp")
        # without an exp claim the token is used once (for this fetch) and exchanged next time
        expires = float(exp) if isinstance(exp, int | float) else 0.0
        with self._lock:
            self._tokens[key] = (token, expires)

    def drop(self, key: tuple[str, str]) -> None:
        with self._lock:
            self._tokens.pop(key, None)


ACCESS_TOKENS = AccessTokens()


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
    tokens: AccessTokens = field(default=ACCESS_TOKENS, repr=False)

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
        return self.is_base(origin) or host_listed(self.extra_hosts, origin.host, origin.port)

    def check(self, url: str) -> tuple[Origin, str]:
        """(origin, address to connect to) or UrlRefused with the reason."""
        origin = Origin.of(url)
        if not self._allowed_origin(origin):
            raise UrlRefused(f"host {origin.netloc()} is not the configured Label Studio ({self.base.netloc()}) "
                             "nor one of SEAM_LABELSTUDIO_EXTRA_HOSTS")
        addr = checked_address(origin.host, origin.port, self.resolver, self.allow_private,
                               "set SEAM_LABELSTUDIO_ALLOW_PRIVATE=true if Label Studio runs on a private network")
        return origin, addr

    # --- fetching ------------------------------------------------------------------
    def fetch(self, url: str, client: httpx.Client | None = None) -> bytes:
        """GET `url` (already made absolute) within the policy; returns the body."""
        own = client is None
        client = client or outbound_client(self.timeout_s)
        try:
            hops = 0
            renewed = False
            while True:
                origin, addr = self.check(url)
                auth = self._auth(client) if self.is_base(origin) else {}
                resp = self._send(client, "GET", url, origin, addr, auth)
                try:
                    if resp.status_code == 401 and not renewed and self._exchanges():
                        # the cached access token was revoked or expired early: one fresh exchange
                        self.tokens.drop(self._token_key())
                        renewed = True
                        continue
                    if resp.status_code in _REDIRECTS:
                        loc = resp.headers.get("location")
                        if not loc:
                            raise FetchFailed(f"redirect without a Location from {origin.netloc()}", resp.status_code)
                        hops += 1
                        if hops > self.max_redirects:
                            raise FetchFailed(f"more than {self.max_redirects} redirects fetching the image")
                        try:
                            url = urljoin(url, loc)
                        except ValueError as exc:  # e.g. an unclosed IPv6 bracket in Location
                            raise UrlRefused(f"{origin.netloc()} redirected to a malformed URL: {exc}") from None
                        continue
                    if resp.status_code != 200:
                        raise FetchFailed(f"Label Studio answered HTTP {resp.status_code} for the image "
                                          f"({short(url)}){_hint(resp.status_code)}", resp.status_code)
                    return self._read_limited(resp)
                finally:
                    resp.close()
        except httpx.HTTPError as exc:
            raise FetchFailed(f"could not fetch the image from {urlsplit(url).netloc}: {exc}") from None
        finally:
            if own:
                client.close()

    def api_json(self, method: Literal["GET", "POST", "PATCH"], path: str, body: object = None,
                 limit: int = 256 * 1024 * 1024, client: httpx.Client | None = None) -> object:
        """A call to Label Studio's own REST API (`path` under the base URL, with the token; no
        redirects): its JSON answer, FetchFailed (with the status) for anything else."""
        url = self.base_url + "/" + path.lstrip("/")
        own = client is None
        client = client or outbound_client(self.timeout_s)
        content = None if body is None else json.dumps(body).encode()
        try:
            for attempt in (0, 1):
                origin, addr = self.check(url)
                extra = {**self._auth(client), "Accept": "application/json, */*;q=0.5"}
                if content is not None:
                    extra["Content-Type"] = "application/json"
                resp = self._send(client, method, url, origin, addr, extra, content)
                try:
                    if resp.status_code == 401 and attempt == 0 and self._exchanges():
                        self.tokens.drop(self._token_key())
                        continue
                    if not 200 <= resp.status_code < 300:
                        raise FetchFailed(f"Label Studio answered HTTP {resp.status_code} to {method} {path}"
                                          f"{_hint(resp.status_code)}", resp.status_code)
                    data = self._read_limited(resp, limit)
                finally:
                    resp.close()
                try:
                    return json.loads(data) if data else None
                except ValueError:
                    raise FetchFailed(f"Label Studio's answer to {method} {path} is not JSON") from None
            raise FetchFailed(f"Label Studio refused the token for {method} {path}", 401)
        except httpx.HTTPError as exc:
            raise FetchFailed(f"could not reach Label Studio ({method} {path}): {exc}") from None
        finally:
            if own:
                client.close()

    def _exchanges(self) -> bool:
        return bool(self.api_key) and token_kind(self.api_key or "") == "refresh"

    def _token_key(self) -> tuple[str, str]:
        return self.base_url, hashlib.sha256((self.api_key or "").encode()).hexdigest()

    def _auth(self, client: httpx.Client) -> dict[str, str]:
        if not self.api_key:
            return {}
        kind = token_kind(self.api_key)
        if kind == "legacy":
            return {"Authorization": f"Token {self.api_key}"}
        if kind == "access":
            return {"Authorization": f"Bearer {self.api_key}"}
        return {"Authorization": f"Bearer {self.access_token(client)}"}

    def access_token(self, client: httpx.Client) -> str:
        """An access token for the personal access token `api_key`: the cached one while it is
        valid, else a new one from Label Studio's /api/token/refresh/."""
        key = self._token_key()
        cached = self.tokens.get(key)
        if cached:
            return cached
        url = self.base_url + TOKEN_REFRESH_PATH
        origin, addr = self.check(url)
        resp = self._send(client, "POST", url, origin, addr, {"Content-Type": "application/json"},
                          json.dumps({"refresh": self.api_key}).encode())
        try:
            if resp.status_code != 200:
                raise FetchFailed(f"Label Studio answered HTTP {resp.status_code} exchanging the personal access "
                                  f"token at {TOKEN_REFRESH_PATH}: the token is revoked, expired or from another "
                                  "Label Studio (SEAM_LABELSTUDIO_API_KEY)", resp.status_code)
            body = self._read_limited(resp, 64 * 1024)
        finally:
            resp.close()
        try:
            access = json.loads(body)["access"]
        except (ValueError, KeyError, TypeError):
            access = None
        if not isinstance(access, str) or not access:
            raise FetchFailed(f"Label Studio's {TOKEN_REFRESH_PATH} answer has no access token")
        self.tokens.put(key, access)
        return access

    def _send(self, client: httpx.Client, method: Literal["GET", "POST", "PATCH"], url: str, origin: Origin, addr: str,
              extra: dict[str, str], body: bytes | None = None) -> httpx.Response:
        default = 443 if origin.scheme == "https" else 80
        headers = {"Host": origin.host if origin.port == default else origin.netloc(), "Accept": ACCEPT, **extra}
        ext = {"sni_hostname": origin.host} if origin.scheme == "https" else {}
        try:
            req = client.build_request(method, httpx.URL(url).copy_with(host=addr), headers=headers, content=body,
                                       extensions=ext)
            return client.send(req, stream=True)
        except httpx.InvalidURL as exc:
            # httpx builds the redirect request from Location even when not following it: a
            # Location such as data:... fails here
            raise UrlRefused(f"invalid URL (or redirect target) from {origin.netloc()}: {exc}") from None
        except httpx.RemoteProtocolError as exc:
            # ...and a Location httpx cannot parse at all comes as this (the test pins the wording)
            if "location header" in str(exc).lower():
                raise UrlRefused(f"{origin.netloc()} redirected to a malformed URL: {exc}") from None
            raise

    def _read_limited(self, resp: httpx.Response, limit: int | None = None) -> bytes:
        cap = self.max_bytes if limit is None else limit
        declared = resp.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > cap:
            raise FetchFailed(f"the image is {declared} bytes, over the limit of {cap}", 413)
        buf = bytearray()
        for chunk in resp.iter_bytes():
            buf += chunk
            if len(buf) > cap:
                raise FetchFailed(f"the image is larger than the limit of {cap} bytes", 413)
        return bytes(buf)


def _hint(status: int) -> str:
    if status == 401:
        return ": the token (SEAM_LABELSTUDIO_API_KEY) is missing, wrong, or a legacy token that the organisation " \
               "has disabled"
    return ""
