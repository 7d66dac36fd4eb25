"""API keys (`X-API-Key`), compared in constant time."""
from __future__ import annotations

import hmac
from collections.abc import Sequence

from service.core.errors import ApiError

API_KEY_HEADER = "X-API-Key"


def key_matches(given: str | None, accepted: Sequence[str]) -> bool:
    if not given:
        return False
    given_b = given.encode("utf-8", "surrogateescape")
    ok = False
    for key in accepted:  # no early exit: time does not depend on which key matched
        ok |= hmac.compare_digest(given_b, key.encode("utf-8"))
    return ok


def check_api_key(given: str | None, accepted: Sequence[str]) -> None:
    if not accepted:
        return
    if not key_matches(given, accepted):
        raise ApiError(401, "unauthorized",
                       f"missing or invalid {API_KEY_HEADER} header" if given else f"the {API_KEY_HEADER} header is required",
                       {"WWW-Authenticate": "ApiKey"})
