"""Authentication before the body with a real `seam serve` process: an unauthenticated 20 MiB
upload is answered before its body is sent."""
from __future__ import annotations

import socket
import time

import pytest

from tests.service.fakes import stack

pytestmark = pytest.mark.slow

KEY = "restart-e2e-key-" + "k" * 8


def test_unauthenticated_upload_answered_before_the_body(tmp_path):
    with stack(tmp_path, "embedded", SEAM_API_KEYS=KEY) as s:
        s.start_api()
        size = 20 * 1024 * 1024
        with socket.create_connection(("127.0.0.1", s.port), timeout=10) as sock:
            sock.sendall((f"POST /segment HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\n"
                          f"Content-Length: {size}\r\n\r\n").encode())
            t0 = time.perf_counter()
            head = ""  # no body byte has been sent; the answer may arrive in several segments
            while "unauthorized" not in head and time.perf_counter() - t0 < 5:
                part = sock.recv(4096).decode(errors="replace")
                if not part:
                    break
                head += part
            assert head.startswith("HTTP/1.1 401"), head
            assert "unauthorized" in head and time.perf_counter() - t0 < 5
            sent = 0
            try:  # the server closed the connection: the body cannot be pushed
                for _ in range(size // 65536):
                    sock.sendall(b"x" * 65536)
                    sent += 65536
            except OSError:
                pass
            assert sent < size
