"""Finding images and reading image-level label files (shared by every CLI and the service)."""
from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from seam.common.classes import resolve_labels

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")


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
    if path.suffix == ".json":
        data = json.loads(path.read_text())
        if not isinstance(data, dict):
            raise ValueError(f"{path}: expected a JSON object {{image id: [classes]}}")
        return {Path(str(k)).stem: resolve_labels(_as_list(v), foreground) for k, v in data.items()}
    if path.suffix in (".csv", ".tsv"):
        out = {}
        with open(path, newline="") as f:
            reader = csv.reader(f, delimiter="\t" if path.suffix == ".tsv" else ",")
            for i, row in enumerate(reader):
                if not row or (i == 0 and row[0].strip().lower() in ("image", "id", "filename", "file")):
                    continue
                tokens = [t for cell in row[1:] for t in cell.replace("|", ";").replace(",", ";").split(";")]
                out[Path(row[0].strip()).stem] = resolve_labels([t for t in tokens if t.strip()], foreground)
        return out
    raise ValueError(f"{path}: unsupported label file type (use .npy, .json or .csv)")


def _as_list(v: object) -> list[str | int]:
    if isinstance(v, (list, tuple)):
        return list(v)
    if isinstance(v, str):
        return [t for t in v.replace(";", ",").split(",") if t.strip()]
    if isinstance(v, int):
        return [v]
    raise ValueError(f"labels must be a list of names or indices, got {v!r}")
