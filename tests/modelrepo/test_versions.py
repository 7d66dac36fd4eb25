"""The versioned model repository (seam.modelrepo.versions) on hand-built repositories made from
the bundled demo model: legacy flat dirs, versions in both layouts, addressing, publishing
(atomic, checksums verified, concurrent publishers), promote / rollback and the digest."""
from __future__ import annotations

import json
import shutil
import threading
from pathlib import Path

import pytest

from seam.modelrepo import versions as V
from seam.modelrepo.manifest import ManifestError
from tests.support import REPO

DEMO = REPO / "models" / "seam-demo"


def _demo_copy(dest: Path, bg: float | None = None) -> Path:
    shutil.copytree(DEMO, dest)
    if bg is not None:
        mf = json.loads((dest / "manifest.json").read_text())
        mf["cam"]["bg_threshold"] = bg
        (dest / "manifest.json").write_text(json.dumps(mf))
    return dest


def test_legacy_repository_is_one_model_version_1(tmp_path: Path) -> None:
    _demo_copy(tmp_path / "seam-demo")
    models = V.list_models(tmp_path)
    assert list(models) == ["seam-demo"]
    entry = models["seam-demo"]
    assert entry.legacy and entry.promoted == 1 and list(entry.versions) == [1]
    v = V.resolve(tmp_path, None)
    assert v.ref == "seam-demo:1" and v.dirs == {"seam": tmp_path / "seam-demo"}
    assert V.resolve(tmp_path, "seam-demo:1") == v
    assert set(V.verify_version(v)) == {"seam"}
    with pytest.raises(ValueError, match="legacy"):
        V.promote(tmp_path, "seam-demo", 1)


def test_the_bundled_repository_is_seam_demo_1() -> None:
    assert V.resolve(REPO / "models").ref == "seam-demo:1"


def test_versioned_layouts_and_addressing(tmp_path: Path) -> None:
    _demo_copy(tmp_path / "shapes" / "1")
    _demo_copy(tmp_path / "shapes" / "2" / "seam", bg=0.5)  # per-kind sub-dirs
    (tmp_path / ".shapes.tmp-abc").mkdir()  # in-progress writes are ignored
    models = V.list_models(tmp_path)
    assert list(models) == ["shapes"]
    e = models["shapes"]
    assert list(e.versions) == [1, 2] and e.promoted == 2  # no PROMOTED file: the highest
    assert e.versions[2].dirs == {"seam": tmp_path / "shapes" / "2" / "seam"}
    (tmp_path / "shapes" / "PROMOTED").write_text("1\n")
    assert V.resolve(tmp_path, "shapes").version == 1
    assert V.resolve(tmp_path, "shapes:2").version == 2
    assert V.resolve(tmp_path, ":2").version == 2  # no name: the only (first) name
    with pytest.raises(V.ModelNotFound, match="no version 7"):
        V.resolve(tmp_path, "shapes:7")
    with pytest.raises(V.ModelNotFound, match="no model named 'nope'"):
        V.resolve(tmp_path, "nope")
    with pytest.raises(ValueError, match="invalid model version"):
        V.resolve(tmp_path, "shapes:two")
    # the legacy group is the default name when there is one, SEAM_DEFAULT_MODEL before it
    _demo_copy(tmp_path / "seam-demo")
    assert V.resolve(tmp_path).ref == "seam-demo:1"
    assert V.resolve(tmp_path, default="shapes").ref == "shapes:1"
    assert V.version_digest(e.versions[1]) != V.version_digest(e.versions[2])  # the manifests differ
    assert V.version_digest(e.versions[1]) == V.version_digest(tmp_path / "shapes" / "1")


def test_find_model_answers_as_list_models(tmp_path: Path) -> None:
    _demo_copy(tmp_path / "shapes" / "1")
    _demo_copy(tmp_path / "shapes" / "2" / "seam", bg=0.5)
    (tmp_path / "shapes" / "PROMOTED").write_text("1\n")
    _demo_copy(tmp_path / "a-flat")  # the legacy group, named after its first flat dir
    _demo_copy(tmp_path / "b-flat")  # a second flat seam dir: not in the group
    (tmp_path / "empty").mkdir()
    listed = V.list_models(tmp_path)
    assert list(listed) == ["a-flat", "shapes"]
    for name in ["shapes", "a-flat", "b-flat", "empty", "nope", "..", ".shapes"]:
        assert V.find_model(tmp_path, name) == listed.get(name), name
    with pytest.raises(ManifestError, match="does not exist"):
        V.find_model(tmp_path / "missing", "shapes")


def test_unreadable_versions_are_listed_with_their_error(tmp_path: Path) -> None:
    _demo_copy(tmp_path / "m" / "1")
    (tmp_path / "m" / "2").mkdir(parents=True)
    (tmp_path / "m" / "3").mkdir()
    (tmp_path / "m" / "3" / "manifest.json").write_text("{not json")
    e = V.list_models(tmp_path)["m"]
    assert e.versions[2].error and "no manifest.json" in e.versions[2].error
    assert e.versions[3].error and "unreadable JSON" in e.versions[3].error
    assert e.promoted == 1  # the highest readable one
    with pytest.raises(ManifestError):
        V.verify_version(e.versions[3])


def test_corrupt_and_half_copied_versions_are_refused(tmp_path: Path) -> None:
    half = _demo_copy(tmp_path / "m" / "1")
    with open(half / "model.onnx", "r+b") as f:  # a half-copied graph
        f.truncate(1000)
    flipped = _demo_copy(tmp_path / "m" / "2")
    data = bytearray((flipped / "pcm.onnx").read_bytes())
    data[100] ^= 0xFF
    (flipped / "pcm.onnx").write_bytes(bytes(data))
    e = V.list_models(tmp_path)["m"]
    for n in (1, 2):
        with pytest.raises(ManifestError, match="does not match"):
            V.verify_version(e.versions[n])
    with pytest.raises(ManifestError):  # nor promoted
        V.promote(tmp_path, "m", 1)
    with pytest.raises(ManifestError):  # nor published from
        V.publish_version(tmp_path, "other", half)
    assert not (tmp_path / "other").exists() or not any((tmp_path / "other").iterdir())
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # the temporary copy is gone


def test_publish_promote_rollback(tmp_path: Path) -> None:
    repo = tmp_path / "models"
    src_a, src_b = _demo_copy(tmp_path / "a"), _demo_copy(tmp_path / "b", bg=0.5)
    (src_a / "unrelated.pth").write_bytes(b"x")  # not named by the manifest: not copied
    assert V.publish_version(repo, "shapes", src_a) == 1
    assert not (repo / "shapes" / "1" / "unrelated.pth").exists()
    assert V.resolve(repo, "shapes").version == 1  # the first version is promoted
    assert V.publish_version(repo, "shapes", {"seam": src_b}) == 2
    assert V.resolve(repo, "shapes").version == 1  # later ones only when asked
    assert V.publish_version(repo, "shapes", [src_b], promote=True) == 3
    assert V.resolve(repo, "shapes").version == 3
    assert V.promote(repo, "shapes", 2) == 2
    assert V.rollback(repo, "shapes") == 3
    assert V.rollback(repo, "shapes") == 1
    with pytest.raises(ValueError, match="no earlier promoted version"):
        V.rollback(repo, "shapes")
    events = [(e["event"], e["version"]) for e in V.history(repo, "shapes")]
    assert events == [("publish", 1), ("promote", 1), ("publish", 2), ("publish", 3), ("promote", 3),
                      ("promote", 2), ("rollback", 3), ("rollback", 1)]
    assert (repo / "shapes" / "PROMOTED").read_text().strip() == "1"
    with pytest.raises(ValueError, match="invalid model name"):
        V.publish_version(repo, ".hidden", src_a)
    with pytest.raises(V.ModelNotFound):
        V.promote(repo, "shapes", 9)


def test_concurrent_publishers_get_distinct_versions(tmp_path: Path) -> None:
    repo = tmp_path / "models"
    src = _demo_copy(tmp_path / "src")
    got: list[int] = []
    errors: list[BaseException] = []

    def publish() -> None:
        try:
            got.append(V.publish_version(repo, "shapes", src))
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=publish) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and sorted(got) == [1, 2, 3, 4]
    assert all(V.verify_version(v) for v in V.list_models(repo)["shapes"].versions.values())


def test_fingerprint_sees_versions_promotions_and_copies(tmp_path: Path) -> None:
    src = _demo_copy(tmp_path / "src")
    repo = tmp_path / "models"
    V.publish_version(repo, "shapes", src)
    fp = V.repo_fingerprint(repo)
    assert V.repo_fingerprint(repo) == fp
    V.publish_version(repo, "shapes", src)
    fp2 = V.repo_fingerprint(repo)
    assert fp2 != fp
    V.promote(repo, "shapes", 2)
    assert V.repo_fingerprint(repo) != fp2
    fp3 = V.repo_fingerprint(repo)
    (repo / ".shapes.tmp-x").mkdir()  # hidden writes do not count
    assert V.repo_fingerprint(repo) == fp3
    with open(repo / "shapes" / "1" / "model.onnx", "ab") as f:  # a copy still growing
        f.write(b"0")
    assert V.repo_fingerprint(repo) != fp3
