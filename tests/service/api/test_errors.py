"""No 500s and nothing internal in error bodies: over-long names, server paths, the broker's
address; and the hostile-input table of docs/service.md checked against the answers."""
from __future__ import annotations

from fastapi.testclient import TestClient
from seam.service.jobs.stores.redis import RedisJobStore
from seam.service.main import create_app

from tests.service.fakes import (
    FakeEngine,
    assert_error,
    png_bytes,
    post_job,
    tar_bytes,
    wait,
    zip_bomb,
    zip_bytes,
)


# --- no 500s, nothing internal in error bodies ------------------------------------------------
def test_over_long_names_are_4xx(app_client, allowed_root):
    c = app_client()
    job = post_job(c, zip_bytes({"a.png": png_bytes(8, 8)})).json()
    wait(c, job["id"])
    assert_error(c.get(f"/jobs/{job['id']}/results/png/{'x' * 5000}"), 404)
    assert_error(c.get(f"/jobs/{job['id']}/results/png/{'x/' * 3000}y"), 404)
    assert_error(c.get(f"/static/{'x' * 5000}.js"), 404)
    assert_error(post_job(c, zip_bytes({f"{'n' * 250}.png": png_bytes(8, 8)})), 422, "invalid_archive", "longer")
    assert_error(post_job(c, tar_bytes({f"{'d' * 150}/" * 8 + "a.png": png_bytes(8, 8)})), 422, "invalid_archive")
    r = c.post("/jobs", json={"directory": "x" * 300})
    assert_error(r, 422, "invalid_directory")
    assert c.app.state.storage.job_ids() == [job["id"]]


def test_error_bodies_carry_no_server_paths(app_client, allowed_root, tmp_path):
    c = app_client()
    r = c.post("/jobs", json={"directory": str(allowed_root / "missing")})
    err = assert_error(r, 422, "invalid_directory")
    assert str(tmp_path) not in err["message"] and "<allowed_root>/missing" in err["message"]


def test_dead_broker_address_not_disclosed(make_settings):
    dead = RedisJobStore("redis://127.0.0.1:1/0", "seamdead", 3600)
    app = create_app(make_settings(), engine=FakeEngine(), store=dead)
    with TestClient(app, raise_server_exceptions=False) as c:
        for r in (c.get("/jobs"), c.get("/readyz")):
            assert r.status_code == 503
            assert "127.0.0.1" not in r.text and ":1" not in r.text.replace('":1', ""), r.text


def _table_status(row_start: str) -> int:
    """The status the hostile-input table of docs/service.md gives for the row starting with `row_start`."""
    from tests.support import REPO

    text = (REPO / "docs" / "service.md").read_text()
    table = text[text.index("### Hostile inputs"):]
    for line in table.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 2 and cells[0].startswith(row_start):
            return int(cells[1][:3])
    raise AssertionError(f"no row {row_start!r} in the hostile-input table")


def test_hostile_input_table_matches_the_answers(app_client):
    from tests.service.fakes import lying_jpeg, zip_lying_sizes

    c = app_client(max_archive_bytes=1 << 20)
    deep = b'{"tasks": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    observed = {
        "empty (zero-byte) image": [c.post("/segment", files={"image": ("a.png", b"")})],
        "image whose header claims more pixels": [c.post("/segment", files={"image": ("a.jpg", lying_jpeg())})],
        "not an image": [c.post("/segment", files={"image": ("a.png", b"hello")})],
        "lying zip header": [post_job(c, zip_lying_sizes(4 << 20, declared=100))],
        "zip bomb": [post_job(c, zip_bomb(3 << 20))],
        "deeply nested JSON": [c.post(path, content=deep, headers={"content-type": "application/json"})
                               for path in ("/jobs", "/labelstudio/predict", "/cvat/detect")],
    }
    for row, answers in observed.items():
        want = _table_status(row)
        for r in answers:
            assert_error(r, want)
    assert "corrupt" in observed["lying zip header"][0].json()["error"]["message"]
    assert c.app.state.storage.job_ids() == []
