"""Turning a POST /jobs request into a job: archive extraction or directory listing,
label tables, manifest, chunks. Pure functions over Storage, run in a worker thread."""
from __future__ import annotations

import csv
import json
import shutil
import time
from collections.abc import Sequence
from pathlib import Path, PurePosixPath
from typing import IO

from seam.common.classes import resolve_labels
from seam.common.files import IMAGE_EXTENSIONS
from service.archives import extract_archive
from service.core.config import Settings
from service.core.errors import ApiError
from service.inputs import resolve_or_422
from service.storage import Storage


def image_id(rel: str) -> str:
    """'sub/a.jpg' -> 'sub/a' (the name outputs are written under)."""
    p = PurePosixPath(rel)
    return str(p.with_suffix("")) if p.suffix else str(p)


def index_images(rels: Sequence[str]) -> dict[str, str]:
    images: dict[str, str] = {}
    for rel in sorted(rels):
        iid = image_id(rel)
        if iid in images:
            raise ApiError(422, "duplicate_image", f"{images[iid]!r} and {rel!r} would write the same outputs "
                                                   f"({iid!r}); rename one")
        images[iid] = rel
    return images


def match_labels(table: dict[str, list[int]], images: dict[str, str]) -> dict[str, list[int]]:
    """Label table keys (ids, file names or stems) -> image ids of this job."""
    by_stem: dict[str, list[str]] = {}
    for iid in images:
        by_stem.setdefault(PurePosixPath(iid).name, []).append(iid)
    out: dict[str, list[int]] = {}
    for key, labels in table.items():
        k = image_id(key.replace("\\", "/").lstrip("/"))
        if k in images:
            out[k] = labels
        elif len(by_stem.get(PurePosixPath(k).name, [])) == 1:
            out[by_stem[PurePosixPath(k).name][0]] = labels
    return out


def parse_label_bytes(data: bytes, names: Sequence[str], scratch: Path) -> dict[str, list[int]]:
    """A labels upload (CSV `image,labels` or JSON {image: [names]}); never a pickle."""
    if data.startswith(b"\x93NUMPY") or data.startswith(b"\x80"):
        raise ApiError(422, "invalid_labels", "numpy/pickle label files are not accepted; send CSV or JSON")
    text = data.lstrip()
    suffix = ".json" if text.startswith((b"{", b"[")) else ".csv"
    scratch.mkdir(parents=True, exist_ok=True)
    path = scratch / f"labels-upload{suffix}"
    path.write_bytes(data)
    return load_labels_file(path, names)


def _read_table(path: Path, names: Sequence[str]) -> dict[str, list[int]]:
    """The formats of `seam.common.files.load_label_file` (JSON {image: [classes]}, CSV/TSV
    `image,labels` with labels split on ; | or quoted commas), keeping each key's path so
    that `a/x.png` and `b/x.png` in one archive stay distinct. Never reads .npy."""
    if path.suffix == ".json":
        data = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(data, dict):
            raise ValueError("expected a JSON object {image: [classes]}")
        out = {}
        for k, v in data.items():
            if isinstance(v, str):
                v = [t for t in v.replace(";", ",").split(",") if t.strip()]
            elif isinstance(v, int) and not isinstance(v, bool):
                v = [v]
            if not isinstance(v, list) or not all(isinstance(t, (str, int)) and not isinstance(t, bool) for t in v):
                raise ValueError(f"labels of {k!r} must be a list of class names or indices")
            out[str(k)] = resolve_labels(v, names)
        return out
    out = {}
    with open(path, newline="", encoding="utf-8") as f:
        for i, row in enumerate(csv.reader(f, delimiter="\t" if path.suffix == ".tsv" else ",")):
            if not row or (i == 0 and row[0].strip().lower() in ("image", "id", "filename", "file")):
                continue
            tokens = [t for cell in row[1:] for t in cell.replace("|", ";").replace(",", ";").split(";")]
            out[row[0].strip()] = resolve_labels([t for t in tokens if t.strip()], names)
    return out


def load_labels_file(path: Path, names: Sequence[str]) -> dict[str, list[int]]:
    try:
        return _read_table(path, names)
    except (ValueError, UnicodeDecodeError, json.JSONDecodeError, csv.Error) as exc:
        code = "unknown_class" if "unknown class" in str(exc) or "out of range" in str(exc) else "invalid_labels"
        raise ApiError(422, code, f"labels file: {exc}") from None
    except OSError as exc:
        raise ApiError(422, "invalid_labels", f"labels file: {exc}") from None


def chunked(ids: Sequence[str], size: int) -> list[list[str]]:
    return [list(ids[i:i + size]) for i in range(0, len(ids), size)]


def prepare_upload_job(storage: Storage, settings: Settings, job_id: str, archive: IO[bytes],
                       labels_data: bytes | None, names: Sequence[str]) -> tuple[dict[str, str], dict[str, list[int]]]:
    dest = storage.inputs_dir(job_id)
    ex = extract_archive(archive, dest, settings.max_archive_members, settings.max_archive_bytes)
    images = index_images(ex.images)
    table: dict[str, list[int]] = {}
    if ex.labels_file:
        table.update(load_labels_file(dest / ex.labels_file, names))
    if labels_data:
        table.update(parse_label_bytes(labels_data, names, storage.tmp_dir(job_id)))
    return images, match_labels(table, images)


def prepare_directory_job(settings: Settings, directory: str, recursive: bool,
                          labels: dict[str, list[str | int]] | None, names: Sequence[str]
                          ) -> tuple[Path, dict[str, str], dict[str, list[int]]]:
    root = settings.allowed_root
    if root is None:
        raise ApiError(403, "forbidden", "directory jobs are disabled on this server (set SEAM_ALLOWED_ROOT)")
    try:
        p = Path(directory)
        target = (p if p.is_absolute() else root / p).resolve()
    except (ValueError, OSError, RuntimeError) as exc:
        raise ApiError(422, "invalid_directory", f"bad directory {directory!r}: {exc}") from None
    if not target.is_relative_to(root):
        raise ApiError(403, "forbidden", f"directory {directory!r} is outside the allowed root")
    if not target.is_dir():
        raise ApiError(422, "invalid_directory", f"{directory!r} is not a directory under the allowed root")
    rels: list[str] = []
    walker = target.rglob("*") if recursive else target.iterdir()
    for f in walker:
        rel = f.relative_to(target)
        if any(part.startswith(".") for part in rel.parts) or f.suffix.lower() not in IMAGE_EXTENSIONS:
            continue
        if not f.is_file() or not f.resolve().is_relative_to(root):
            continue  # symlinks leading out of the allowed root are ignored
        rels.append(rel.as_posix())
        if len(rels) > settings.max_archive_members:
            raise ApiError(413, "too_many_images", f"more than {settings.max_archive_members} images in {directory!r}")
    if not rels:
        raise ApiError(422, "invalid_directory", f"no images ({', '.join(IMAGE_EXTENSIONS)}) in {directory!r}")
    images = index_images(rels)
    table = {}
    for key, toks in (labels or {}).items():
        try:
            table[key] = resolve_or_422(list(toks), names) or []
        except ApiError as exc:
            raise ApiError(422, exc.code, f"labels of {key!r}: {exc.message}") from None
    return target, images, match_labels(table, images)


def write_manifest(storage: Storage, job_id: str, options: dict, images: dict[str, str],
                   labels: dict[str, list[int]], source: str, source_dir: Path | None) -> None:
    storage.write_manifest(job_id, {
        "id": job_id, "created_at": time.time(), "options": options, "source": source,
        "source_dir": str(source_dir) if source_dir else None, "images": images, "labels": labels,
    })


def discard(storage: Storage, job_id: str) -> None:
    shutil.rmtree(storage.job_dir(job_id), ignore_errors=True)
