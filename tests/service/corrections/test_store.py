"""The corrections store: idempotent puts, update replaces, delete removes, ownership, bad input
refused with nothing written, and the fit's training data made from it."""
from __future__ import annotations

import csv
import io
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from seam.service.corrections.fit_data import write_fit_data
from seam.service.corrections.store import (
    Change,
    Correction,
    CorrectionError,
    CorrectionStore,
    NotOwner,
    image_key,
)

CLASSES = ["disc", "square", "triangle"]


def png(h: int = 12, w: int = 16, seed: int = 0) -> bytes:
    rgb = np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG")
    return buf.getvalue()


def mask(h: int = 12, w: int = 16, cls: int = 1) -> np.ndarray:
    m = np.zeros((h, w), np.uint8)
    m[2:6, 3:9] = cls
    return m


@pytest.fixture
def project(tmp_path: Path):
    p = CorrectionStore(tmp_path).project("labelstudio", "7")
    p.claim("owner-a", CLASSES)
    return p


def files_of(p) -> list[str]:
    return sorted(str(f.relative_to(p.dir)) for f in p.dir.rglob("*") if f.is_file() and f.name != ".lock")


def test_the_same_correction_twice_changes_nothing(project) -> None:
    c = Correction("task-1", mask(), ["disc"], png(), {"annotation": 3})
    assert project.put(c) is Change.created
    before = files_of(project)
    meta = project.meta()
    assert project.put(c) is Change.unchanged
    assert files_of(project) == before
    assert project.meta()["changes_since_fit"] == meta["changes_since_fit"] == 1


def test_an_update_replaces_and_a_delete_removes(project) -> None:
    project.put(Correction("task-1", mask(cls=1), ["disc"], png()))
    assert project.put(Correction("task-1", mask(cls=2), ["square"])) is Change.updated
    item = project.item("task-1")
    assert item["labels"] == ["square"]
    stored = np.array(Image.open(project.path(item["mask"])))
    assert set(np.unique(stored).tolist()) == {0, 2}
    assert len(list((project.dir / "masks").iterdir())) == 1  # the old mask is gone
    assert project.delete("task-1") is Change.deleted
    assert project.corrected() == []
    assert project.item("task-1")["image"]  # the image stays cached: the task still exists
    assert not (project.dir / "masks").exists() or not list((project.dir / "masks").iterdir())
    assert project.delete("task-1") is Change.absent
    assert project.delete("never") is Change.absent


@pytest.mark.parametrize(("bad", "words"), [
    (Correction("t", mask(cls=4), ["disc"], png()), "no class of the project"),
    (Correction("t", mask(), ["zebra"], png()), "unknown labels ['zebra']"),
    (Correction("t", mask(10, 16), ["disc"], png()), "the mask is 16x10 but the image is 16x12"),
    (Correction("t", mask(), ["disc"], None), "an image we never saw"),
    (Correction("t", mask(), ["disc"], b"not an image"), "not a readable image"),
    (Correction("t", mask().astype(np.int32), ["disc"], png()), "2-D uint8"),
])
def test_bad_input_is_named_and_nothing_is_written(project, bad: Correction, words: str) -> None:
    good = Correction("fine", mask(), ["disc"], png())
    with pytest.raises(CorrectionError) as err:
        project.put_many([good, bad])
    assert words in str(err.value)
    assert files_of(project) == ["project.json"]


def test_the_project_belongs_to_the_key_that_configured_it(project) -> None:
    with pytest.raises(NotOwner):
        project.claim("owner-b", CLASSES)
    with pytest.raises(NotOwner):
        project.check_owner("owner-b")
    assert project.check_owner("owner-b", admin=True)["owner"] == "owner-a"
    project.claim("owner-a", [*CLASSES, "ring"])  # the owner may reconfigure
    assert project.meta()["classes"][-1] == "ring"


def test_image_keys_are_safe_and_distinct() -> None:
    assert image_key("task-12") == "task-12"
    a, b = image_key("a/b.png"), image_key("a_b.png")
    assert a != b and "/" not in a
    assert not image_key("../../etc/passwd").startswith(".")
    with pytest.raises(CorrectionError):
        image_key("")


def test_project_ids_are_checked(tmp_path: Path) -> None:
    with pytest.raises(CorrectionError):
        CorrectionStore(tmp_path).project("labelstudio", "../x")
    with pytest.raises(CorrectionError):
        CorrectionStore(tmp_path).project("paint", "1")


def test_concurrent_writers_leave_one_consistent_record(project) -> None:
    project.put(Correction("task-1", mask(cls=1), ["disc"], png()))
    errors: list[BaseException] = []

    def write(cls: int) -> None:
        try:
            for _ in range(10):
                project.put(Correction("task-1", mask(cls=cls), [CLASSES[cls - 1]]))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(c,)) for c in (1, 2, 3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    item = project.item("task-1")
    stored = np.array(Image.open(project.path(item["mask"])))
    assert set(np.unique(stored).tolist()) == {0, CLASSES.index(item["labels"][0]) + 1}
    assert len(list((project.dir / "masks").iterdir())) == 1


def test_fit_data_puts_corrections_in_place_of_pseudo_labels(project, tmp_path: Path) -> None:
    project.put(Correction("task-1", mask(cls=2), ["square"], png(seed=1)))
    project.put_image("task-2", png(seed=2))
    project.put_image("task-3", png(seed=3))
    seen: list[bytes] = []

    def pseudo(data: bytes, labels) -> np.ndarray:
        seen.append(data)
        return mask(cls=1) if data == png(seed=2) else np.zeros((12, 16), np.uint8)  # task-3: background only

    fit = write_fit_data(project, tmp_path / "fit", pseudo)
    assert (fit.images, fit.corrected, fit.pseudo) == (2, 1, 1)
    rows = {r[0]: r[1] for r in csv.reader(io.StringIO((fit.root / "labels.csv").read_text())) if r[0] != "image"}
    assert rows == {"task-1": "square", "task-2": "disc"}
    corrected = np.array(Image.open(fit.pseudo_dir / "task-1.png"))
    assert set(np.unique(corrected).tolist()) == {0, 2}
    assert sorted(p.name for p in (fit.root / "images").iterdir()) == ["task-1.png", "task-2.png"]
    assert (fit.root / "classes.txt").read_text().split() == ["background", *CLASSES]
    assert len(seen) == 2  # the corrected image is not pseudo-labelled


def test_fit_data_needs_a_correction(project, tmp_path: Path) -> None:
    project.put_image("task-2", png(seed=2))
    with pytest.raises(CorrectionError, match="0 corrected images"):
        write_fit_data(project, tmp_path / "fit", None)
