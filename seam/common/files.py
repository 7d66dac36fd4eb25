"""Finding images, reading image-level label files and hashing files (shared by every CLI,
training and the service)."""
from __future__ import annotations

import csv
import hashlib
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from seam.common.classes import resolve_labels

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
# Label tables found beside the images (a training folder, a job archive), in this order.
LABEL_FILE_NAMES = ("labels.csv", "labels.json", "labels.tsv")
LABEL_TABLE_SUFFIXES = (".csv", ".tsv", ".json")


def list_images(src: str | Path, image_root: str | Path | None = None) -> list[tuple[str, Path]]:
    """[(image id, path)] from a directory of images or a list file.

    A list file holds one entry per line; the first token is an id (`2007_000032`),
    a file name, or a VOC-style path (`/JPEGImages/2007_000032.jpg ...`). Entries are
    resolved against `image_root`, else the VOC layout around the list
    (`<root>/ImageSets/Segmentation/x.txt` -> `<root>/JPEGImages`), else the list's folder.
    """
    src = Path(src)
    if src.is_dir():
        items = sorted(p for p in src.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())
        if not items:
            raise FileNotFoundError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) in {src}")
        return [(p.stem, p) for p in items]
    if not src.is_file():
        raise FileNotFoundError(f"no such image directory or list file: {src}")
    roots = [Path(image_root)] if image_root else [src.parent.parent.parent / "JPEGImages", src.parent]
    out: list[tuple[str, Path]] = []
    missing: list[str] = []
    for line in src.read_text().splitlines():
        tok = line.strip().split()
        if not tok:
            continue
        entry = tok[0]
        rel = Path(entry.lstrip("/"))
        candidates = [Path(entry)] if Path(entry).is_absolute() else []
        for root in roots:
            candidates += [root / rel, root / rel.name]
            if not rel.suffix:
                candidates += [root / f"{rel.name}{ext}" for ext in IMAGE_EXTENSIONS]
        if image_root is None and rel.parts and rel.parts[0] == "JPEGImages":
            candidates.append(src.parent.parent.parent / rel)
        found = next((c for c in candidates if c.is_file()), None)
        if found is None:
            missing.append(entry)
        else:
            out.append((Path(entry).stem, found))
    if missing:
        raise FileNotFoundError(f"{len(missing)} listed images not found (first: {missing[0]!r}); set the image root")
    return out


def load_label_file(path: str | Path, foreground: Sequence[str]) -> dict[str, list[int]]:
    """Image-level labels {image id: sorted foreground indices}.

    Accepts the authors' `cls_labels.npy` (a pickled dict id -> multi-hot vector;
    trusted local files only, the service never loads it), JSON `{id: [names or
    indices]}` and CSV with columns `image,labels` (labels separated by `;` or `|`,
    or by `,` when quoted).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"label file not found: {path}")
    if path.suffix == ".npy":
        obj = np.load(path, allow_pickle=True)
        table = obj.item() if obj.dtype == object else None
        if not isinstance(table, dict):
            raise ValueError(f"{path}: expected a dict saved with np.save (the authors' cls_labels.npy)")
        out = {}
        for k, v in table.items():
            v = np.asarray(v).reshape(-1)
            if v.shape[0] != len(foreground):
                raise ValueError(f"{path}: {k} has {v.shape[0]} classes, expected {len(foreground)}")
            out[str(k)] = [int(i) for i in np.flatnonzero(v > 0.5)]
        return out
    if path.suffix in LABEL_TABLE_SUFFIXES:
        try:
            table = read_label_table(path)
        except ValueError as exc:
            raise ValueError(f"{path}: {exc}") from None
        return {Path(k).stem: resolve_labels(v, foreground) for k, v in table.items()}
    raise ValueError(f"{path}: unsupported label file type (use .npy, .json or .csv)")


def read_label_table(path: str | Path) -> dict[str, list[str | int]]:
    """A CSV/TSV or JSON label table as written: {image key: [class names or indices]}.

    JSON `{image: [classes]}` (a list, one index, or a string split on `,`/`;`); CSV/TSV rows
    `image,labels` with labels split on `;`, `|` or (quoted) `,`, an optional header row.
    Keys are kept as written (a path in an archive stays a path); the one parser behind the
    CLI's, the service's and training's label files. Never reads .npy."""
    path = Path(path)
    if path.suffix == ".json":
        data = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(data, dict):
            raise ValueError("expected a JSON object {image: [classes]}")
        return {str(k): _as_list(k, v) for k, v in data.items()}
    if path.suffix not in (".csv", ".tsv"):
        raise ValueError(f"unsupported label table type {path.suffix!r} (use .csv, .tsv or .json)")
    out: dict[str, list[str | int]] = {}
    with open(path, newline="", encoding="utf-8") as f:
        for i, row in enumerate(csv.reader(f, delimiter="\t" if path.suffix == ".tsv" else ",")):
            if not row or (i == 0 and row[0].strip().lower() in ("image", "id", "filename", "file")):
                continue
            tokens = [t for cell in row[1:] for t in cell.replace("|", ";").replace(",", ";").split(";")]
            out[row[0].strip()] = [t for t in tokens if t.strip()]
    return out


def _as_list(key: object, v: object) -> list[str | int]:
    if isinstance(v, str):
        return [t for t in v.replace(";", ",").split(",") if t.strip()]
    if isinstance(v, int) and not isinstance(v, bool):
        return [v]
    if not isinstance(v, list) or not all(isinstance(t, (str, int)) and not isinstance(t, bool) for t in v):
        raise ValueError(f"labels of {key!r} must be a list of class names or indices")
    return list(v)


def file_sha256(path: str | Path) -> str:
    """sha256 of a file's bytes, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
