"""The web page: `/` (index.html) and `/static/<file>` from `service/web/`.

Plain files, no build step. Caching:

* `/` is served `Cache-Control: no-cache` with an ETag (revalidated on every load, a
  cheap 304 when unchanged). Its `/static/...` references are rewritten to carry
  `?v=<content hash>`.
* `/static/<file>?v=<its current hash>` is `immutable` for a year: a new version of a
  file gets a new URL from the next index.html, so nobody runs a stale app.js.
* `/static/<file>` without (or with a stale) `v` is `no-cache` + ETag.

The page carries no secret and needs no API key: the key is typed into the page and
sent by its scripts as `X-API-Key` to the API routes, which check it.
"""
from __future__ import annotations

import hashlib
import mimetypes
import re
import threading
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import Response
from seam.service.core.errors import ApiError

WEB_DIR = Path(__file__).parents[2] / "web"
INDEX = "index.html"

CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".json": "application/json",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
    ".webp": "image/webp",
    ".txt": "text/plain; charset=utf-8",
    ".woff2": "font/woff2",
}
IMMUTABLE = "public, max-age=31536000, immutable"
REVALIDATE = "no-cache"
_STATIC_NAME = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9_.-]*(/[A-Za-z0-9_-][A-Za-z0-9_.-]*)*$")
_STATIC_REF = re.compile(r"""(?P<attr>(?:src|href)=")/static/(?P<name>[A-Za-z0-9_./-]+)(?P<end>")""")

# The page only talks to its own origin; images it draws are blob:/data: URLs it made.
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; "
       "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
SECURITY_HEADERS = {"X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer"}


@dataclass(frozen=True)
class _Asset:
    body: bytes
    etag: str
    version: str
    content_type: str


class _Assets:
    """Files of the web folder, read once and re-read when their mtime or size changes."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self._cache: dict[str, tuple[tuple[int, int], _Asset]] = {}
        self._lock = threading.Lock()

    def path(self, name: str) -> Path | None:
        if not _STATIC_NAME.match(name) or ".." in name.split("/"):
            return None
        try:
            path = (self.root / name).resolve()
            if not path.is_relative_to(self.root) or not path.is_file():
                return None
        except OSError:  # ENAMETOOLONG and the like: no such file
            return None
        return path

    def get(self, name: str) -> _Asset | None:
        path = self.path(name)
        if path is None:
            return None
        st = path.stat()
        key = (st.st_mtime_ns, st.st_size)
        with self._lock:
            hit = self._cache.get(name)
            if hit and hit[0] == key:
                return hit[1]
        body = path.read_bytes()
        if name == INDEX:
            body = self._versioned_index(body)
        digest = hashlib.sha256(body).hexdigest()
        ctype = (CONTENT_TYPES.get(path.suffix.lower()) or mimetypes.guess_type(path.name)[0]
                 or "application/octet-stream")
        asset = _Asset(body=body, etag=f'"{digest[:32]}"', version=digest[:12], content_type=ctype)
        with self._lock:
            self._cache[name] = (key, asset)
        return asset

    def _versioned_index(self, html: bytes) -> bytes:
        text = html.decode("utf-8")

        def add_version(m: re.Match[str]) -> str:
            name = m.group("name")
            ref = self.get(name) if name != INDEX else None
            if ref is None:
                return m.group(0)
            return f"{m.group('attr')}/static/{name}?v={ref.version}{m.group('end')}"

        return _STATIC_REF.sub(add_version, text).encode("utf-8")


@lru_cache(maxsize=1)
def assets() -> _Assets:
    """The web folder's files, set up on the first request (importing the routes touches no disk)."""
    return _Assets(WEB_DIR)


router = APIRouter(include_in_schema=False)


def _etag_matches(request: Request, etag: str) -> bool:
    header = request.headers.get("if-none-match")
    if not header:
        return False
    tags = [t.strip() for t in header.split(",")]
    return "*" in tags or etag in tags or f"W/{etag}" in tags


def _serve(request: Request, asset: _Asset, cache_control: str, extra: dict[str, str] | None = None) -> Response:
    headers = {"ETag": asset.etag, "Cache-Control": cache_control, **SECURITY_HEADERS, **(extra or {})}
    if _etag_matches(request, asset.etag):
        return Response(status_code=304, headers=headers)
    body = b"" if request.method == "HEAD" else asset.body
    resp = Response(body, media_type=asset.content_type, headers=headers)
    if request.method == "HEAD":
        resp.headers["Content-Length"] = str(len(asset.body))
    return resp


@router.api_route("/", methods=["GET", "HEAD"])
def index(request: Request) -> Response:
    asset = assets().get(INDEX)
    if asset is None:
        raise ApiError(404, "not_found", "the web page is not installed (service/web/index.html is missing)")
    return _serve(request, asset, REVALIDATE, {"Content-Security-Policy": CSP})


@router.api_route("/static/{name:path}", methods=["GET", "HEAD"])
def static(name: str, request: Request) -> Response:
    asset = assets().get(name)
    if asset is None:
        raise ApiError(404, "not_found", f"no static file {name[:200]!r}")
    fresh = request.query_params.get("v") == asset.version
    return _serve(request, asset, IMMUTABLE if fresh else REVALIDATE)
