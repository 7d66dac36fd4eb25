"""The model registry of a process (seam.service.core.registry) over real ONNX versions of the
demo model: promoted versions load, a newly promoted one switches in on refresh while an engine
acquired before keeps answering, pinned versions load on demand (LRU), corrupt or half-copied
versions are refused and never replace the serving one, and a job's chunk runs on exactly the
version it pinned."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from seam.service.core.config import Settings
from seam.service.core.errors import ApiError
from seam.service.core.registry import PinMismatch, make_registry

from seam.modelrepo import versions
from testkit.versions import BG, corrupt, publish_variant
from tests.support import shapes_photo


def _registry(repo: Path, **kw):
    s = Settings(models_dir=repo, engine="onnx", warmup=False, threads=1, **kw)
    return make_registry(s)


def _label(served, rgb: np.ndarray) -> np.ndarray:
    return served.engine.segment(rgb, method="cam").label


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    repo = tmp_path / "models"
    for n in (1, 2):
        assert publish_variant(repo, "shapes", BG[n], tmp_path) == n
    return repo  # version 1 promoted (the first published), version 2 not


def test_promoted_loads_and_a_promotion_switches_in(repo: Path, tmp_path: Path) -> None:
    reg = _registry(repo)
    assert reg.refresh() and reg.ready
    rgb = shapes_photo(96, 128)
    v1 = reg.acquire()
    assert v1.ref == "shapes:1" and reg.acquire("shapes").ref == "shapes:1"
    assert v1.digest == versions.version_digest(versions.resolve(repo, "shapes:1"))
    old_label = _label(v1, rgb)
    v2_pinned = reg.acquire("shapes:2")  # loaded on demand
    assert v2_pinned.ref == "shapes:2" and not np.array_equal(_label(v2_pinned, rgb), old_label)
    versions.promote(repo, "shapes", 2)
    assert reg.refresh()  # the fingerprint changed: rescanned
    assert reg.acquire().ref == "shapes:2" and reg.engine is reg.acquire().engine
    assert reg.acquire().engine is v2_pinned.engine  # the pinned engine became the promoted one: no reload
    np.testing.assert_array_equal(_label(v1, rgb), old_label)  # held across the swap, still answers
    assert reg.acquire("shapes:1").engine is v1.engine  # the replaced version stays loaded for pins
    assert [s["version"] for s in reg.swaps] == [1, 2]
    rows = {r["version"]: r for r in reg.status()[0]["versions"]}
    assert rows[2]["state"] == "serving" and rows[2]["promoted"] and rows[1]["state"] == "loaded"


def test_unknown_and_malformed_refs(repo: Path) -> None:
    reg = _registry(repo)
    reg.refresh()
    for ref, status in (("nope", 404), ("shapes:9", 404), ("shapes:x", 422), ("bad name", 422)):
        with pytest.raises(ApiError) as err:
            reg.acquire(ref)
        assert err.value.status_code == status, ref
        assert err.value.message


def test_a_version_published_since_the_last_poll_is_found_at_once(repo: Path, tmp_path: Path) -> None:
    """The API (polling on its own) may list and forward a version this process has not polled
    yet: a request naming it rescans instead of answering 404 until the next poll."""
    reg = _registry(repo)
    reg.refresh()
    assert publish_variant(repo, "shapes", 0.3, tmp_path) == 3
    assert publish_variant(repo, "other", 0.3, tmp_path) == 1  # a new name, promoted as the first
    assert reg.acquire("shapes:3").ref == "shapes:3"  # no refresh() in between
    assert reg.acquire("other").ref == "other:1"
    with pytest.raises(ApiError) as err:  # still unknown after the rescan: 404
        reg.acquire("shapes:9")
    assert err.value.status_code == 404


def test_pinned_versions_are_bounded(repo: Path, tmp_path: Path) -> None:
    publish_variant(repo, "shapes", 0.3, tmp_path)
    reg = _registry(repo, max_pinned_models=1)
    reg.refresh()
    v2 = reg.acquire("shapes:2")
    reg.acquire("shapes:3")  # evicts 2 (least recently used)
    assert reg._loaded(("shapes", 2)) is None and reg._loaded(("shapes", 3)) is not None
    assert reg.acquire("shapes:2").engine is not v2.engine  # loaded again
    assert _label(v2, shapes_photo(64, 64)).shape == (64, 64)  # the evicted engine still served its holder


@pytest.mark.parametrize("damage", ["flipped byte", "half copied"])
def test_corrupt_version_is_refused_and_never_replaces_the_good_one(repo: Path, tmp_path: Path, damage: str,
                                                                     monkeypatch) -> None:
    reg = _registry(repo)
    reg.refresh()
    n = publish_variant(repo, "shapes", 0.3, tmp_path)
    graph = repo / "shapes" / str(n) / "model.onnx"
    if damage == "flipped byte":
        corrupt(graph)
    else:
        with open(graph, "r+b") as f:
            f.truncate(graph.stat().st_size // 2)
    versions.promote(repo, "shapes", n, verify=False)  # as a hand-edited PROMOTED file would
    reg.refresh()
    assert reg.acquire().ref == "shapes:1" and reg.ready  # the good one keeps serving
    row = {r["version"]: r for r in reg.status()[0]["versions"]}[n]
    assert row["state"] == "refused" and "does not match" in row["error"]
    entry = reg.status()[0]
    assert entry["promoted"] == n and entry["serving"] == 1
    with pytest.raises(ApiError) as err:
        reg.acquire(f"shapes:{n}")
    assert err.value.status_code == 422 and "does not match" in err.value.message
    calls = []
    monkeypatch.setattr(versions, "verify_version", lambda v: calls.append(v))
    with pytest.raises(ApiError):
        reg.acquire(f"shapes:{n}")
    assert calls == []  # refused once: not hashed again per request until its files change


def test_a_job_pin_gets_exactly_its_version(repo: Path) -> None:
    reg = _registry(repo)
    reg.refresh()
    pin = reg.acquire()
    versions.promote(repo, "shapes", 2)
    reg.refresh()
    got = reg.acquire_pinned("shapes", 1, pin.digest)
    assert got.ref == "shapes:1" and got.engine is pin.engine
    with pytest.raises(PinMismatch, match="changed since the job was submitted"):
        reg.acquire_pinned("shapes", 1, "0" * 64)
    with pytest.raises(PinMismatch, match="not available"):
        reg.acquire_pinned("shapes", 7, pin.digest)


def test_legacy_repository_serves_as_before(tmp_path: Path) -> None:
    from testkit.versions import demo_variant

    repo = tmp_path / "models"
    demo_variant(repo / "seam-demo", BG[1])
    reg = _registry(repo)
    reg.refresh()
    served = reg.acquire()
    assert served.ref == "seam-demo:1" and [m.name for m in served.engine.models()] == ["seam-demo"]
    assert reg.status()[0]["legacy"] and reg.default_ref() == "seam-demo:1"
