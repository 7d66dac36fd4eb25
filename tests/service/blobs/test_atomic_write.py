"""The one atomic file writer (blobs/files.atomic_write_chunks), used by the folder blob store and
the job files (storage.atomic_write): old file or new file complete, never a leftover."""
from pathlib import Path

import pytest
from seam.service.blobs.files import TMP_PREFIX, atomic_write_chunks
from seam.service.storage import atomic_write


def test_a_failed_write_keeps_the_old_file_and_leaves_nothing(tmp_path: Path) -> None:
    target = tmp_path / "a" / "f.bin"
    atomic_write(target, b"old")

    def chunks():
        yield b"new-part"
        raise RuntimeError("source broke")

    with pytest.raises(RuntimeError):
        atomic_write_chunks(target, chunks())
    assert target.read_bytes() == b"old"
    assert [p.name for p in target.parent.iterdir()] == ["f.bin"]


def test_temporary_files_go_to_tmp_dir(tmp_path: Path) -> None:
    tmp_dir = tmp_path / "tmp"
    atomic_write(tmp_path / "out" / "x", b"data", tmp_dir)
    atomic_write_chunks(tmp_path / "out" / "y", [b"da", b"ta"], tmp_dir)
    assert (tmp_path / "out" / "x").read_bytes() == (tmp_path / "out" / "y").read_bytes() == b"data"
    assert list(tmp_dir.iterdir()) == [] and TMP_PREFIX == ".w-"  # storage's listings skip ".w-" names
