"""A manifest and its images over http(s): only the hosts of SEAM_DATASET_HTTP_HOSTS, private
addresses only with SEAM_DATASET_ALLOW_PRIVATE, redirects not followed (a per-image error). With
the default storage (the data directory): jobs over data sets need no object store."""
from __future__ import annotations

import http.server
import io
import threading
import zipfile
from contextlib import contextmanager

import httpx
import numpy as np
import pytest
from PIL import Image

from tests.service.fakes import FakeEngine, encode, rgb_image, stack
from tests.support import wait_done

pytestmark = pytest.mark.slow


@contextmanager
def serving(files: dict[str, bytes]):
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - the stdlib's name
            if self.path == "/moved.png":
                self.send_response(302)
                self.send_header("Location", "http://169.254.169.254/latest/meta-data")
                self.end_headers()
                return
            body = files.get(self.path)
            self.send_response(200 if body is not None else 404)
            self.send_header("Content-Length", str(len(body or b"")))
            self.end_headers()
            self.wfile.write(body or b"")

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()


def test_http_manifest_and_images(tmp_path, redis_ok):
    imgs = {f"p{i}": rgb_image(18, 22, seed=i) for i in range(5)}
    files = {f"/img/{k}.png": encode(a) for k, a in imgs.items()}
    with serving(files) as host:
        lines = [f"http://{host}/img/{k}.png" for k in imgs] + [f"http://{host}/moved.png", f"http://{host}/gone.png"]
        files["/list.csv"] = ("uri\n" + "\n".join(lines) + "\n").encode()
        env = {"SEAM_DATASET_HTTP_HOSTS": host, "SEAM_DATASET_ALLOW_PRIVATE": "true"}
        with stack(tmp_path, "embedded", **env) as s:
            s.start_api()
            with httpx.Client(base_url=s.url, timeout=30) as c:
                r = c.post("/jobs", json={"input_url": f"http://{host}/list.csv"})
                assert r.status_code == 202, r.text
                done = wait_done(c, r.json()["id"], 60)
                assert (done["done"], done["failed"], done["total"]) == (5, 2, 7), done
                errors = {e["image"]: e["error"] for e in done["errors"]}
                assert "302" in errors["moved"] and "gone" in errors
                zf = zipfile.ZipFile(io.BytesIO(c.get(f"/jobs/{done['id']}/results").content))
                for k, a in imgs.items():
                    got = np.asarray(Image.open(io.BytesIO(zf.read(f"png/img/{k}.png"))))
                    assert np.array_equal(got, FakeEngine().segment(a).label)
        # the same server without SEAM_DATASET_ALLOW_PRIVATE: refused at submission
        (tmp_path / "b").mkdir()
        with stack(tmp_path / "b", "embedded", SEAM_DATASET_HTTP_HOSTS=host) as s:
            s.start_api()
            with httpx.Client(base_url=s.url, timeout=30) as c:
                r = c.post("/jobs", json={"input_url": f"http://{host}/list.csv"})
                assert r.status_code == 422 and "non-public" in r.json()["error"]["message"], r.text
