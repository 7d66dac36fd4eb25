"""What the integration tests share: keys and a fake Label Studio on loopback (test scenes:
`tests.service.fakes.scene`)."""
from __future__ import annotations

import base64
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

LS_TOKEN = "ls-token-0123456789abcdef"
LIVE_KEY = "live-key-0123456789abcdef"  # the API key of the live_api fixture's server


def fake_jwt(token_type: str, exp: float, jti: str = "0") -> str:
    """A token shaped like Label Studio's JWTs (header.payload.signature; the signature is not checked)."""
    def part(obj: dict) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()
    return ".".join([part({"alg": "HS256", "typ": "JWT"}),
                     part({"token_type": token_type, "exp": int(exp), "jti": jti, "user_id": "1"}), "c2ln"])


class FakeLabelStudio:
    """A loopback HTTP server standing in for Label Studio 1.23: serves files under /data/...
    to requests carrying its legacy token, or a Bearer access token it issued at
    /api/token/refresh/ for its personal access token `pat` (valid `access_ttl` seconds); answers
    406 to an Accept header without a wildcard, as Label Studio's /data/upload does; records
    every request it receives (the token exchanges in `exchanges`)."""

    def __init__(self, token: str = LS_TOKEN, access_ttl: float = 300.0) -> None:
        self.files: dict[str, bytes] = {}
        self.redirects: dict[str, str] = {}
        self.requests: list[tuple[str, dict[str, str]]] = []
        self.pat = fake_jwt("refresh", time.time() + 86400, "pat")
        self.access_ttl = access_ttl
        self.issued: dict[str, float] = {}  # access token -> expiry
        self.exchanges = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a) -> None:  # quiet
                pass

            def _authorised(self) -> bool:
                auth = self.headers.get("Authorization") or ""
                if auth == f"Token {token}":
                    return True
                bearer = auth[7:] if auth.startswith("Bearer ") else None
                return bearer is not None and outer.issued.get(bearer, 0.0) > time.time()

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if self.path.rstrip("/") != "/api/token/refresh":
                    self.send_response(404)
                    self.end_headers()
                    return
                if json.loads(body or b"{}").get("refresh") != outer.pat:
                    self.send_response(401)
                    self.end_headers()
                    return
                outer.exchanges += 1
                access = fake_jwt("access", time.time() + outer.access_ttl, str(outer.exchanges))
                outer.issued[access] = time.time() + outer.access_ttl
                data = json.dumps({"access": access}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                outer.requests.append((self.path, {k.lower(): v for k, v in self.headers.items()}))
                if self.path in outer.redirects:
                    self.send_response(302)
                    self.send_header("Location", outer.redirects[self.path])
                    self.end_headers()
                    return
                if not self._authorised():
                    self.send_response(401)
                    self.end_headers()
                    return
                accept = self.headers.get("Accept")
                if accept is not None and "*/*" not in accept:
                    self.send_response(406)
                    self.end_headers()
                    return
                body = outer.files.get(self.path)
                if body is None:
                    self.send_response(404)
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("Content-Type", "image/png")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        # a short poll interval: shutdown() waits for the loop's next poll (0.5 s by default, per test)
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.01,), daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)
