"""Outbound clients share one TLS context (httpx would build and load a CA bundle per client)
and never follow redirects or read proxy settings from the environment."""
from __future__ import annotations

from seam.service.core.http import _tls_context, outbound_client


def test_outbound_clients_share_one_tls_context_and_follow_nothing(monkeypatch) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")  # would divert a trust_env client
    a, b = outbound_client(5.0), outbound_client(7.0)
    try:
        ctx_a = a._transport._pool._ssl_context
        assert ctx_a is b._transport._pool._ssl_context is _tls_context()
        assert not a.follow_redirects and not a.trust_env and not a._mounts  # no proxy mounted
        assert a.timeout.read == 5.0 and b.timeout.read == 7.0
    finally:
        a.close()
        b.close()
