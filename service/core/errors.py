"""One error shape for every failure: `{"error": {"code": ..., "message": ...}}`.

`ApiError` subclasses Starlette's HTTPException so that it also escapes FastAPI's
body parsing unchanged (the upload-size middleware raises it while the multipart
body is being read).
"""
from __future__ import annotations

import contextlib
import logging
from collections.abc import Mapping, Sequence

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from seam.service.core.redact import redact
from starlette.exceptions import HTTPException

log = logging.getLogger("seam.service")

_HTTP_CODES = {
    400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found", 405: "method_not_allowed",
    406: "not_acceptable", 408: "request_timeout", 409: "conflict", 413: "too_large",
    415: "unsupported_media_type", 422: "validation_error", 429: "too_many_requests", 500: "internal_error",
    503: "unavailable", 507: "insufficient_storage",
}


class ApiError(HTTPException):
    def __init__(self, status: int, code: str, message: str, headers: Mapping[str, str] | None = None,
                 details: object = None) -> None:
        super().__init__(status_code=status, detail=message, headers=dict(headers) if headers else None)
        self.code = code
        self.message = message
        self.details = details


def error_body(code: str, message: str, details: object = None, roots: Sequence[tuple[str, str]] = ()) -> dict:
    """The error shape; the message is redacted (no server paths, addresses, host:port)."""
    err: dict = {"code": code, "message": redact(message, roots)}
    if details is not None:
        err["details"] = details
    return {"error": err}


def error_response(status: int, code: str, message: str, headers: Mapping[str, str] | None = None,
                   details: object = None, roots: Sequence[tuple[str, str]] = ()) -> JSONResponse:
    return JSONResponse(error_body(code, message, details, roots), status_code=status, headers=dict(headers or {}))


def server_roots(request: Request) -> list[tuple[str, str]]:
    """The configured folders, as they may appear in messages, and their placeholders."""
    return settings_roots(getattr(request.app.state, "settings", None))


def settings_roots(settings: object) -> list[tuple[str, str]]:
    """`server_roots` of these settings (also used for job errors, recorded outside any request)."""
    roots: list[tuple[str, str]] = []
    for attr, placeholder in (("data_dir", "<data>"), ("allowed_root", "<allowed_root>"), ("models_dir", "<models>")):
        path = getattr(settings, attr, None)
        if path is None:
            continue
        roots.append((str(path), placeholder))
        with contextlib.suppress(OSError, RuntimeError):
            roots.append((str(path.resolve()), placeholder))
    return roots


def _loc(loc: Sequence[object]) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header", "form")]
    return ".".join(parts) or "body"


def describe_validation(errors: Sequence[Mapping]) -> str:
    msgs = []
    for e in errors[:5]:
        where = _loc(e.get("loc", ()))
        msg = str(e.get("msg", "invalid"))
        if e.get("type") == "missing":
            msgs.append(f"field '{where}' is required")
        elif e.get("type") == "json_invalid":
            ctx = e.get("ctx") or {}
            at = f" (at character {where})" if where.isdigit() else ""
            msgs.append(f"the body is not valid JSON: {ctx.get('error', msg)}{at}")
        else:
            msgs.append(f"field '{where}': {msg}")
    more = f" (+{len(errors) - 5} more)" if len(errors) > 5 else ""
    return "; ".join(msgs) + more


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc.status_code, exc.code, exc.message, exc.headers, exc.details, server_roots(request))

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        details = [{"field": _loc(e.get("loc", ())), "message": str(e.get("msg", "")), "type": e.get("type")}
                   for e in errors]
        return error_response(422, "validation_error", describe_validation(errors), details=details,
                              roots=server_roots(request))

    @app.exception_handler(HTTPException)
    async def _http(request: Request, exc: HTTPException) -> JSONResponse:
        if exc.status_code == 400 and isinstance(exc.__cause__, RecursionError):
            # FastAPI's own JSON body parsing: malformed JSON is its 422, so too-deep JSON is ours
            # (as for JSON label tables and /jobs bodies, parsed by pydantic)
            return error_response(422, "validation_error", "the JSON body is nested too deeply")
        code = _HTTP_CODES.get(exc.status_code, "http_error")
        message = exc.detail if isinstance(exc.detail, str) else code.replace("_", " ")
        if exc.status_code == 413:
            message = "request body too large"
        return error_response(exc.status_code, code, message, exc.headers, roots=server_roots(request))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return error_response(500, "internal_error", "internal server error")
