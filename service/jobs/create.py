"""Turning a POST /jobs request into a job: archive extraction or directory listing,
label tables, manifest, chunks. Pure functions over Storage, run in a worker thread."""
from __future__ import annotations

import csv
import json
import time
from collections.abc import Sequence
from pathlib import Path, PurePosixPath
from typing import IO

from seam.service.archives import check_name, extract_archive
from seam.service.core.config import Settings
from seam.service.core.errors import ApiError
from seam.service.inputs import allowed_directory, resolve_or_422
from seam.service.storage import Storage

from seam.common.classes import resolve_labels
from seam.common.files import IMAGE_EXTENSIONS, read_label_table


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


def parse_label_bytes(data: bytes, names: Sequence[str], scratch: Path,
                      max_labels_bytes: int = 16 << 20) -> dict[str, list[int]]:
    """A labels upload (CSV `image,labels` or JSON {image: [names]}); never a pickle."""
    if len(data) > max_labels_bytes:
        raise ApiError(413, "labels_too_large", f"the labels upload is larger than {max_labels_bytes} bytes")
    if data.startswith(b"\x93NUMPY") or data.startswith(b"\x80"):
        raise ApiError(422, "invalid_labels", "numpy/pickle label files are not accepted; send CSV or JSON")
    text = data.lstrip()
    suffix = ".json" if text.startswith((b"{", b"[")) else ".csv"
    scratch.mkdir(parents=True, exist_ok=True)
    path = scratch / f"labels-upload{suffix}"
    path.write_bytes(data)
    return load_labels_file(path, names)


def _read_table(path: Path, names: Sequence[str]) -> dict[str, list[int]]:
    """`seam.common.files.read_label_table`, keeping each key's path so that `a/x.png` and
    `b/x.png` in one archive stay distinct."""
    return {k: resolve_labels(v, names) for k, v in read_label_table(path).items()}


def load_labels_file(path: Path, names: Sequence[str]) -> dict[str, list[int]]:
    try:
        return _read_table(path, names)
    except (ValueError, UnicodeDecodeError, json.JSONDecodeError, csv.Error) as exc:
        code = "unknown_class" if "unknown class" in str(exc) or "out of range" in str(exc) else "invalid_labels"
        raise ApiError(422, code, f"labels file: {exc}") from None
    except RecursionError:
        raise ApiError(422, "invalid_labels", "labels file: JSON nested too deeply") from None
    except OSError as exc:
        raise ApiError(422, "invalid_labels", f"labels file could not be read: {exc.strerror}") from None


def chunked(ids: Sequence[str], size: int) -> list[list[str]]:
    return [list(ids[i:i + size]) for i in range(0, len(ids), size)]


MIN_EXPANSION_BYTES = 8 << 20  # a tiny archive (a few BMPs, a label table) may always expand this far


def expansion_limit(settings: Settings, uploaded: int, quota_left: int | None) -> tuple[int, str]:
    """Bytes an archive of `uploaded` bytes may expand to, and which limit that is."""
    by_ratio = max(int(settings.max_expansion_ratio * uploaded), MIN_EXPANSION_BYTES)
    limits = [(settings.max_archive_bytes, "SEAM_MAX_ARCHIVE_BYTES"),
              (by_ratio, f"{settings.max_expansion_ratio:g} x the {uploaded}-byte upload, at least "
                         f"{MIN_EXPANSION_BYTES >> 20} MiB: SEAM_MAX_EXPANSION_RATIO")]
    if quota_left is not None:
        limits.append((max(quota_left, 0), "what is left of the data-directory quota SEAM_MAX_DATA_BYTES"))
    return min(limits)


def quota_left(storage: Storage, settings: Settings) -> int | None:
    if settings.max_data_bytes is None:
        return None
    return settings.max_data_bytes - storage.usage_bytes()


def prepare_upload_job(storage: Storage, settings: Settings, job_id: str, archive: IO[bytes],
                       labels_data: bytes | None, names: Sequence[str]
                       ) -> tuple[dict[str, str], dict[str, list[int]], dict[str, str]]:
    """(images by id, labels by image id, archive members skipped -> why)."""
    archive.seek(0, 2)
    uploaded = archive.tell()
    archive.seek(0)
    limit, why = expansion_limit(settings, uploaded, quota_left(storage, settings))
    dest = storage.inputs_dir(job_id)
    ex = extract_archive(archive, dest, settings.max_archive_members, limit, settings.max_labels_bytes, why)
    images = index_images(ex.images)
    table: dict[str, list[int]] = {}
    if ex.labels_file:
        table.update(load_labels_file(dest / ex.labels_file, names))
    if labels_data:
        table.update(parse_label_bytes(labels_data, names, storage.tmp_dir(job_id), settings.max_labels_bytes))
    return images, match_labels(table, images), ex.skipped


def prepare_directory_job(settings: Settings, directory: str, recursive: bool,
                          labels: dict[str, list[str | int]] | None, names: Sequence[str]
                          ) -> tuple[Path, dict[str, str], dict[str, list[int]]]:
    target = allowed_directory(settings.allowed_root, directory, "directory jobs")
    root, shown = settings.allowed_root, directory[:200]
    rels: list[str] = []
    walker = target.rglob("*") if recursive else target.iterdir()
    try:
        for f in walker:
            rel = f.relative_to(target)
            if any(part.startswith(".") for part in rel.parts) or f.suffix.lower() not in IMAGE_EXTENSIONS:
                continue
            if not f.is_file() or not f.resolve().is_relative_to(root):
                continue  # symlinks leading out of the allowed root are ignored
            check_name(rel.as_posix(), "file")
            rels.append(rel.as_posix())
            if len(rels) > settings.max_archive_members:
                raise ApiError(413, "too_many_images", f"more than {settings.max_archive_members} images in {shown!r}")
    except OSError as exc:
        raise ApiError(422, "invalid_directory", f"{shown!r} could not be listed: {exc.strerror}") from None
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
                   labels: dict[str, list[int]], source: str, source_dir: Path | None,
                   chunk_size: int | None = None, classes: Sequence[str] | None = None,
                   models: list[dict] | None = None, skipped: dict[str, str] | None = None,
                   pin: dict | None = None, extra: dict | None = None) -> None:
    # chunk_size: a resumed job is cut into the same chunks (delivery counts are per chunk).
    # classes/models: the label set and model identities at submission; outputs and downloads
    # use them, never whatever model is loaded later.
    storage.write_manifest(job_id, {
        "id": job_id, "created_at": time.time(), "options": options, "source": source,
        "source_dir": str(source_dir) if source_dir else None, "images": images, "labels": labels,
        "chunk_size": chunk_size, "classes": list(classes) if classes is not None else None, "models": models or [],
        "skipped": skipped or {},
        # the model version every chunk must run on: {"model": NAME, "model_version": N, "model_digest": sha256}
        **(pin or {}),
        **(extra or {}),  # a job over a data set: streamed, input_url, input_kind, output_url (jobs.submit_stream)
    })


def discard(storage: Storage, job_id: str) -> None:
    storage.delete_job(job_id)  # the folder, or the job's objects in an object store
