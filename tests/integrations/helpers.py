"""What the integration tests share: keys, test scenes, and a fake Label Studio on loopback."""
from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np

LS_TOKEN = "ls-token-0123456789abcdef"
LIVE_KEY = "live-key-0123456789abcdef"  # the API key of the live_api fixture's server


def scene(h: int, w: int, seed: int = 0) -> np.ndarray:
    """Grey noise with a red and a blue block (the fake engine's classes are colours)."""
    rng = np.random.default_rng(seed)
    rgb = rng.integers(90, 120, (h, w, 3)).astype(np.uint8)
    rgb[h // 6: h // 2, 1: w // 2] = (230, 20, 25)
    rgb[h // 2: h - 2, w // 2: w - 3] = (15, 30, 240)
    return rgb


class FakeLabelStudio:
    """A loopback HTTP server standing in for Label Studio: serves files under /data/...
    to requests carrying its token, and records every request it receives."""

    def __init__(self, token: str = LS_TOKEN) -> None:
        self.files: dict[str, bytes] = {}
        self.redirects: dict[str, str] = {}
        self.requests: list[tuple[str, dict[str, str]]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a) -> None:  # quiet
                pass

            def do_GET(self) -> None:
                outer.requests.append((self.path, {k.lower(): v for k, v in self.headers.items()}))
                if self.path in outer.redirects:
                    self.send_response(302)
                    self.send_header("Location", outer.redirects[self.path])
                    self.end_headers()
                    return
                if self.headers.get("Authorization") != f"Token {token}":
                    self.send_response(401)
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
