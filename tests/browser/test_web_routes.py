"""The web router without a browser: content types, cache headers, ETags, path safety,
no API key needed for the page itself, and static accessibility checks of index.html."""
from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from seam.service.api.routes import web
from seam.service.core.config import Settings
from seam.service.fake_engine import FakeEngine
from seam.service.main import create_app

WEB = Path(web.__file__).resolve().parents[2] / "web"
KEY = "route-test-key-0123456789"


@pytest.fixture(scope="module")
def client(tmp_path_factory) -> TestClient:
    tmp = tmp_path_factory.mktemp("web-routes")
    settings = Settings(engine="fake", data_dir=tmp / "data", models_dir=tmp / "models", api_keys=[KEY])
    with TestClient(create_app(settings, engine=FakeEngine())) as c:
        yield c


def test_index(client):
    r = client.get("/")
    assert r.status_code == 200  # no API key needed for the page, although the server has keys
    assert r.headers["content-type"] == "text/html; charset=utf-8"
    assert r.headers["cache-control"] == "no-cache"
    assert r.headers["x-content-type-options"] == "nosniff"
    assert "script-src 'self'" in r.headers["content-security-policy"]
    assert re.search(r'src="/static/app\.js\?v=[0-9a-f]{12}"', r.text)
    assert re.search(r'href="/static/style\.css\?v=[0-9a-f]{12}"', r.text)
    assert client.get("/", headers={"If-None-Match": r.headers["etag"]}).status_code == 304
    assert client.get("/models").status_code == 401  # the API itself stays protected
    assert client.get("/models", headers={"X-API-Key": KEY}).status_code == 200


@pytest.mark.parametrize("name, ctype", [("app.js", "text/javascript; charset=utf-8"),
                                         ("style.css", "text/css; charset=utf-8"),
                                         ("favicon.svg", "image/svg+xml")])
def test_static_types_and_caching(client, name, ctype):
    version = re.search(rf"/static/{re.escape(name)}\?v=([0-9a-f]+)", client.get("/").text).group(1)
    fresh = client.get(f"/static/{name}?v={version}")
    assert fresh.status_code == 200 and fresh.headers["content-type"] == ctype
    assert fresh.headers["cache-control"] == "public, max-age=31536000, immutable"
    assert fresh.content == (WEB / name).read_bytes()
    plain = client.get(f"/static/{name}")
    assert plain.headers["cache-control"] == "no-cache"
    assert client.get(f"/static/{name}?v=stale").headers["cache-control"] == "no-cache"
    assert client.get(f"/static/{name}", headers={"If-None-Match": plain.headers["etag"]}).status_code == 304
    head = client.head(f"/static/{name}")
    assert head.status_code == 200 and head.content == b""
    assert int(head.headers["content-length"]) == len(fresh.content)


@pytest.mark.parametrize("path", ["/static/../main.py", "/static/%2e%2e/main.py", "/static/..%2fmain.py",
                                  "/static/.hidden", "/static/", "/static/nope.js", "/static//etc/passwd",
                                  "/static/%2fetc%2fpasswd"])
def test_static_refuses(client, path):
    r = client.get(path)
    assert r.status_code == 404
    assert r.headers["content-type"].startswith("application/json")


class _Inventory(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.controls: list[dict] = []
        self.label_for: set[str] = set()
        self.in_label = 0
        self.imgs: list[dict] = []
        self.urls: list[str] = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.urls += [v for k, v in attrs if k in ("src", "href") and v]
        if tag == "label":
            self.in_label += 1
            if a.get("for"):
                self.label_for.add(a["for"])
        elif tag in ("input", "select", "textarea") and a.get("type") != "hidden":
            self.controls.append({**a, "_wrapped": self.in_label > 0})
        elif tag == "img":
            self.imgs.append(a)

    def handle_endtag(self, tag):
        if tag == "label":
            self.in_label -= 1


def test_index_accessibility_basics():
    html = (WEB / "index.html").read_text()
    inv = _Inventory()
    inv.feed(html)
    assert '<html lang="en">' in html
    unlabelled = [c for c in inv.controls if not c["_wrapped"] and c.get("id") not in inv.label_for
                  and not c.get("aria-label")]
    assert not unlabelled, unlabelled
    assert all("alt" in i for i in inv.imgs)
    assert 'role="status"' in html and 'aria-live="polite"' in html and 'role="alert"' in html
    # everything is same-origin: no CDN, works offline and under the CSP
    assert not [u for u in inv.urls if re.match(r"^(https?:)?//", u)]
    for name in ("app.js", "style.css"):
        assert not re.search(r"https?://", (WEB / name).read_text()), name
