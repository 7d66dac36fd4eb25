"""API keys (`X-API-Key`), compared in constant time; who owns a job; keeping
server internals out of error messages.

* `authenticate` turns the header into a `Principal`: the job owner is a hash of the
  key (the key itself is never stored), admin keys (`SEAM_ADMIN_API_KEYS`) see every
  job. An open server (no keys) makes everyone the same anonymous admin.
* `ApiKeyMiddleware` checks the key of requests that carry a body *before* a byte of
  it is read (FastAPI parses form bodies before running dependencies), so an
  unauthenticated client cannot make the server spool uploads.
* Messages sent to clients go through `seam.service.core.redact.redact`.
"""
from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence
from dataclasses import dataclass

from seam.service.core.errors import ApiError, error_response
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

API_KEY_HEADER = "X-API-Key"
BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


@dataclass(frozen=True)
class Principal:
    owner: str  # sha256 of the key, "" on an open server
    admin: bool

    def may_see(self, owner: str) -> bool:
        return self.admin or hmac.compare_digest(self.owner, owner)

    @property
    def list_filter(self) -> str | None:
        """The owner to list jobs of; None = everyone's."""
        return None if self.admin else self.owner


def owner_of(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8", "surrogateescape")).hexdigest()[:32]


def key_matches(given: str | None, accepted: Sequence[str]) -> bool:
    if not given:
        return False
    given_b = given.encode("utf-8", "surrogateescape")
    ok = False
    for key in accepted:  # no early exit: time does not depend on which key matched
        ok |= hmac.compare_digest(given_b, key.encode("utf-8"))
    return ok


def _unauthorized(given: str | None) -> ApiError:
    return ApiError(401, "unauthorized",
                    f"missing or invalid {API_KEY_HEADER} "
                    "header" if given else f"the {API_KEY_HEADER} header is required",
                    {"WWW-Authenticate": "ApiKey"})


def authenticate(given: str | None, keys: Sequence[str], admin_keys: Sequence[str]) -> Principal:
    """The caller behind `given`, or 401. No keys configured: an anonymous admin."""
    if not keys and not admin_keys:
        return Principal(owner="", admin=True)
    is_admin = key_matches(given, admin_keys)
    if not (key_matches(given, keys) | is_admin):
        raise _unauthorized(given)
    return Principal(owner=owner_of(given or ""), admin=is_admin)


class ApiKeyMiddleware:
    """401 for a request with a body (POST/PUT/PATCH) and no valid key, answered from
    the headers alone; the connection is closed so the body is never read."""

    def __init__(self, app: ASGIApp, keys: Sequence[str], admin_keys: Sequence[str]) -> None:
        self.app = app
        self.keys = list(keys)
        self.admin_keys = list(admin_keys)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in BODY_METHODS or not (self.keys or self.admin_keys):
            await self.app(scope, receive, send)
            return
        given = Headers(scope=scope).get(API_KEY_HEADER)
        try:
            authenticate(given, self.keys, self.admin_keys)
        except ApiError as exc:
            headers = {**(exc.headers or {}), "Connection": "close"}
            await error_response(exc.status_code, exc.code, exc.message, headers)(scope, receive, send)
            return
        await self.app(scope, receive, send)
