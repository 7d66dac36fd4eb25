"""Model versions through the API in embedded mode, over a real uvicorn socket and real ONNX
versions of the demo model that answer differently (testkit.versions): every answer names the
version that computed it; a pinned old version answers while a newer one is promoted; a version
promoted in the repository is picked up without a restart (the delay is measured); a swap under
load fails no request and each answer matches the version it names; jobs run on the version they
pinned at submission; admin-only promote / rollback."""
from __future__ import annotations

import io
import threading
import time
import zipfile
from pathlib import Path

import httpx
import pytest
from seam.service.main import create_app

from seam.modelrepo import versions
from testkit.processes import wait_until
from testkit.versions import BG, png_bytes, publish_variant
from tests.support import serve_in_thread, shapes_photo

pytestmark = pytest.mark.slow

ADMIN, USER = "admin-key-0123456789", "user-key-0123456789"


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    repo = tmp_path / "models"
    for n in (1, 2):
        publish_variant(repo, "shapes", BG[n], tmp_path)
    return repo  # shapes:1 promoted


def _settings(make_settings, repo: Path, **kw):
    base = dict(engine="onnx", models_dir=repo, models_poll_s=0.1, warmup=False, threads=1, max_inflight=4,
                max_waiting=64, chunk_size=1)
    return make_settings(**{**base, **kw})


def _segment(c: httpx.Client, img: bytes, **data) -> httpx.Response:
    return c.post("/segment", files={"image": ("x.png", img, "image/png")}, data=data)


def _wait_ready(c: httpx.Client) -> None:
    wait_until(lambda: c.get("/readyz").status_code == 200, 60, 0.05, lambda: c.get("/readyz").text)


def test_versions_hot_reload_and_swap_under_load(make_settings, repo: Path) -> None:
    app = create_app(_settings(make_settings, repo))
    img = png_bytes(shapes_photo(64, 96))
    with serve_in_thread(app) as url, httpx.Client(base_url=url, timeout=60) as c:
        _wait_ready(c)
        expected = {}
        for n in (1, 2):
            r = _segment(c, img, model=f"shapes:{n}")
            assert r.status_code == 200 and r.headers["X-Seam-Model"] == f"shapes:{n}"
            expected[f"shapes:{n}"] = r.content
        assert expected["shapes:1"] != expected["shapes:2"]  # the versions are told apart by their answers
        r = _segment(c, img, format="json")
        assert r.json()["model"] == "shapes:1" and r.headers["X-Seam-Model"] == "shapes:1"
        assert _segment(c, img, model="nope").status_code == 404
        bad = _segment(c, img, model="shapes:x")
        assert bad.status_code == 422 and bad.json()["error"]["message"]
        assert _segment(c, img, model="shapes:9").json()["error"]["code"] == "model_not_found"
        body = c.get("/models").json()
        assert body["default_model"] == "shapes:1" and body["classes"]  # the old fields: the default model's
        entry = body["repository"][0]
        assert entry["name"] == "shapes" and entry["promoted"] == 1
        assert [v["version"] for v in entry["versions"]] == [1, 2] and entry["versions"][0]["provenance"]

        # hot reload: a promotion in the repository, no restart; measured to the first answer by it
        t0 = time.perf_counter()
        versions.promote(repo, "shapes", 2)
        wait_until(lambda: _segment(c, img).headers.get("X-Seam-Model") == "shapes:2", 30, 0.02)
        delay = time.perf_counter() - t0
        print(f"promote -> first answer by the new version: {delay:.2f} s (poll 0.1 s)")
        assert _segment(c, img).content == expected["shapes:2"]
        pinned = _segment(c, img, model="shapes:1")  # the older version still answers when pinned
        assert pinned.headers["X-Seam-Model"] == "shapes:1" and pinned.content == expected["shapes:1"]

        answers, failures = _hammer(c, img, repo, app)
        assert not failures, failures[:3]
        seen = {a[0] for a in answers}
        assert seen == {"shapes:1", "shapes:2"}, seen
        wrong = [a for a in answers if a[1] != expected[a[0]]]
        assert not wrong, f"{len(wrong)} answers do not match the version they name"
        print(f"swap under load: {len(answers)} answers, none failed, versions {sorted(seen)}")


def _hammer(c: httpx.Client, img: bytes, repo: Path, app) -> tuple[list[tuple[str, bytes]], list[str]]:
    """Threads send /segment while the main thread promotes 1 and 2 in turn (readiness checked)."""
    stop = threading.Event()
    answers: list[tuple[str, bytes]] = []
    failures: list[str] = []

    def client_loop() -> None:
        with httpx.Client(base_url=str(c.base_url), timeout=60) as own:
            while not stop.is_set():
                r = _segment(own, img)
                if r.status_code != 200:
                    failures.append(f"{r.status_code} {r.text[:200]}")
                else:
                    answers.append((r.headers["X-Seam-Model"], r.content))

    threads = [threading.Thread(target=client_loop) for _ in range(3)]
    for t in threads:
        t.start()
    try:
        for i in range(6):
            target = 1 if i % 2 == 0 else 2
            versions.promote(repo, "shapes", target)
            wait_until(lambda t=target: app.state.holder.default_ref() == f"shapes:{t}", 30, 0.02)
            if c.get("/readyz").status_code != 200:
                failures.append("not ready during a swap")
            time.sleep(0.4)
    finally:
        stop.set()
        for t in threads:
            t.join(60)
    return answers, failures


def test_jobs_run_on_the_version_pinned_at_submission(make_settings, repo: Path, allowed_root: Path) -> None:
    from PIL import Image

    for i in range(6):
        Image.fromarray(shapes_photo(48 + 8 * i, 64, seed=i)).save(allowed_root / f"im{i}.png")
    app = create_app(_settings(make_settings, repo, models_poll_s=30))  # the test refreshes by hand
    with serve_in_thread(app) as url, httpx.Client(base_url=url, timeout=60) as c:
        _wait_ready(c)
        job = c.post("/jobs", json={"directory": ".", "method": "cam"}).json()
        assert job["model"] == "shapes:1"
        versions.promote(repo, "shapes", 2)
        app.state.holder.refresh()  # the swap happens while the job's chunks are queued or running
        assert app.state.holder.default_ref() == "shapes:2"
        done = _finish(c, job["id"])
        later = _finish(c, c.post("/jobs", json={"directory": ".", "method": "cam", "model": "shapes:1"}).json()["id"])
        new = _finish(c, c.post("/jobs", json={"directory": ".", "method": "cam"}).json()["id"])
        assert done == later and done != new  # byte for byte what version 1 computes, not version 2
        manifest = app.state.storage.read_manifest(job["id"])
        assert (manifest["model"], manifest["model_version"]) == ("shapes", 1)
        assert manifest["model_digest"] == versions.version_digest(versions.resolve(repo, "shapes:1"))
        bad = c.post("/jobs", json={"directory": ".", "model": "shapes:7"})
        assert bad.status_code == 404 and "no version 7" in bad.json()["error"]["message"]


def _finish(c: httpx.Client, job_id: str) -> dict[str, bytes]:
    wait_until(lambda: c.get(f"/jobs/{job_id}").json()["state"] not in ("queued", "running"), 120, 0.1)
    snap = c.get(f"/jobs/{job_id}").json()
    assert snap["state"] == "succeeded", snap
    with zipfile.ZipFile(io.BytesIO(c.get(f"/jobs/{job_id}/results").content)) as z:
        return {n: z.read(n) for n in z.namelist() if n.startswith("png/")}


def test_promote_and_rollback_need_an_admin_key(make_settings, make_client, repo: Path) -> None:
    from fastapi.testclient import TestClient

    app = create_app(_settings(make_settings, repo, api_keys=[USER], admin_api_keys=[ADMIN]))
    with TestClient(app) as c:
        wait_until(lambda: c.get("/readyz").status_code == 200, 60, 0.05)
        r = c.post("/models/shapes/promote", json={"version": 2}, headers={"X-API-Key": USER})
        assert r.status_code == 403 and "admin" in r.json()["error"]["message"]
        r = c.post("/models/shapes/promote", json={"version": 2}, headers={"X-API-Key": ADMIN})
        assert r.status_code == 200 and r.json() == {"name": "shapes", "promoted": 2, "previous": 1}
        wait_until(lambda: app.state.holder.default_ref() == "shapes:2", 30, 0.05)
        assert c.post("/models/shapes/rollback", headers={"X-API-Key": USER}).status_code == 403
        r = c.post("/models/shapes/rollback", headers={"X-API-Key": ADMIN})
        assert r.status_code == 200 and r.json()["promoted"] == 1
        assert c.post("/models/shapes/promote", json={"version": 5}, headers={"X-API-Key": ADMIN}).status_code == 404
        assert c.post("/models/nope/rollback", headers={"X-API-Key": ADMIN}).status_code == 404
        r = c.post("/models/shapes/rollback", headers={"X-API-Key": ADMIN})
        assert r.status_code == 422 and "no earlier promoted version" in r.json()["error"]["message"]


def test_corrupt_promoted_version_is_refused_and_reported(make_settings, repo: Path, tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    from testkit.versions import corrupt

    app = create_app(_settings(make_settings, repo))
    img = png_bytes(shapes_photo(48, 64))
    with TestClient(app) as c:
        wait_until(lambda: c.get("/readyz").status_code == 200, 60, 0.05)
        n = publish_variant(repo, "shapes", 0.3, tmp_path)
        corrupt(repo / "shapes" / str(n) / "pcm.onnx")  # e.g. a bad copy after publishing
        versions.promote(repo, "shapes", n, verify=False)  # as a hand-written PROMOTED file would

        def refused() -> dict | None:
            entry = c.get("/models").json()["repository"][0]
            row = {v["version"]: v for v in entry["versions"]}.get(n)  # None until the watcher has seen it
            return entry if row is not None and row["state"] == "refused" else None

        entry = wait_until(refused, 30, 0.05)
        assert entry["promoted"] == n and entry["serving"] == 1
        assert "does not match" in {v["version"]: v for v in entry["versions"]}[n]["error"]
        r = _segment(c, img)
        assert r.status_code == 200 and r.headers["X-Seam-Model"] == "shapes:1"  # the good one still answers
        assert c.get("/readyz").status_code == 200
        pinned = _segment(c, img, model=f"shapes:{n}")
        assert pinned.status_code == 422 and "does not match" in pinned.json()["error"]["message"]


def test_legacy_repository_answers_as_before(make_settings, tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    from testkit.versions import demo_variant

    repo = tmp_path / "legacy"
    demo_variant(repo / "seam-demo", 0.26)
    app = create_app(_settings(make_settings, repo))
    with TestClient(app) as c:
        wait_until(lambda: c.get("/readyz").status_code == 200, 60, 0.05)
        body = c.get("/models").json()
        assert body["default_model"] == "seam-demo:1" and [m["name"] for m in body["models"]] == ["seam-demo"]
        assert body["classes"] == ["disc", "square", "triangle", "ring", "cross"] and body["default_method"]
        assert body["repository"][0]["legacy"] and body["repository"][0]["versions"][0]["state"] == "serving"
        r = _segment(c, png_bytes(shapes_photo(48, 64)), format="json")
        assert r.status_code == 200 and r.json()["model"] == "seam-demo:1"
        assert _segment(c, png_bytes(shapes_photo(48, 64)), model="seam-demo").status_code == 200
        r = c.post("/models/seam-demo/promote", json={"version": 1})
        assert r.status_code == 422 and "legacy" in r.json()["error"]["message"]


def test_a_read_only_repository_answers_409(make_settings, repo: Path, monkeypatch) -> None:
    import errno

    from fastapi.testclient import TestClient

    def read_only(*_a, **_k):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(versions, "promote", read_only)  # a container mounting models/ read-only
    with TestClient(create_app(_settings(make_settings, repo))) as c:
        r = c.post("/models/shapes/promote", json={"version": 2})
        assert r.status_code == 409 and "seam models promote" in r.json()["error"]["message"]
