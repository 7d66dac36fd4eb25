"""The corrections store: per labelling project, the latest corrected mask and image-level
labels of each image, in the data directory (shared by the API and the workers):

    <data_dir>/corrections/<source>-<project>/
        project.json             owner (the key that configured the project), classes, counters, fits
        images/<key>-<sha>.<ext> the image bytes as the tool served them (content-addressed)
        masks/<key>-<sha>.png    the corrected label map: 0 background, c + 1 class c, 255 ignore
        items/<key>.json         the record of one image: its id, labels, files, source event
        .lock                    flock: one writer at a time per project (API threads, processes)

`items/<key>.json` is the commit point: it is written last (atomic replace) and names the
content-addressed files it uses, so a reader sees an image's old correction or its new one,
never a mix; files no record names any more are removed after the record changes. The
directory is the index (a project holds thousands of images, not millions), so no database.

Idempotent by construction: a correction whose image, mask and labels equal the stored ones
changes nothing (`Change.unchanged`); an update replaces; a delete removes.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import io
import json
import os
import re
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

import numpy as np
from PIL import Image
from seam.service.storage import atomic_write

from seam.common.classes import IGNORE_INDEX
from seam.common.encoders import encode_png_label

SOURCES = ("labelstudio", "cvat")
PROJECT_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_KEY_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")


class CorrectionError(ValueError):
    """A correction that cannot be stored (the message names what is wrong)."""


class NotOwner(PermissionError):
    """The project belongs to another API key."""


class Change(StrEnum):
    created = "created"
    updated = "updated"
    unchanged = "unchanged"
    deleted = "deleted"
    absent = "absent"  # a delete of something never stored


@dataclass(frozen=True)
class Correction:
    """One image's correction as the tools give it: `mask` (H, W) uint8 label map (0 background,
    c + 1 = class c of `classes`, 255 ignore), `labels` the image-level class names, `image`
    the image's bytes (None: keep the stored image), `ref` where it came from (annotation id...)."""

    image_id: str
    mask: np.ndarray
    labels: Sequence[str]
    image: bytes | None = None
    ref: dict = field(default_factory=dict)


def image_key(image_id: str) -> str:
    """A file-name-safe key for any image id; ids that need escaping get a digest suffix so two
    ids never share a key."""
    if not image_id or len(image_id) > 1024:
        raise CorrectionError(f"image id {image_id[:80]!r} must have 1 to 1024 characters")
    safe = _KEY_UNSAFE.sub("_", image_id)[:100].lstrip(".") or "_"
    if safe == image_id:
        return safe
    return f"{safe}~{hashlib.sha256(image_id.encode()).hexdigest()[:12]}"


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _image_ext(data: bytes) -> tuple[str, tuple[int, int]]:
    """The image's extension and (H, W); CorrectionError when Pillow cannot read it."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            fmt, (w, h) = (img.format or "").lower(), img.size
            img.verify()
    except Exception as exc:  # Pillow raises many types for broken files
        raise CorrectionError(f"not a readable image: {exc}") from None
    return {"jpeg": ".jpg", "png": ".png", "webp": ".webp", "bmp": ".bmp", "tiff": ".tif"}.get(fmt, ".img"), (h, w)


class ProjectStore:
    """The corrections of one project (`source` labelstudio | cvat, `project` its id there)."""

    def __init__(self, root: Path, source: str, project: str) -> None:
        if source not in SOURCES:
            raise CorrectionError(f"source must be one of {', '.join(SOURCES)}")
        if not PROJECT_RE.match(str(project)):
            raise CorrectionError(f"project id {str(project)[:80]!r} must be 1-64 letters, digits, '_', '.', '-'")
        self.source, self.project = source, str(project)
        self.dir = root / f"{source}-{project}"

    # --- project record --------------------------------------------------------------
    @property
    def name(self) -> str:
        return f"{self.source}-{self.project}"

    def exists(self) -> bool:
        return (self.dir / "project.json").is_file()

    def meta(self) -> dict:
        try:
            return json.loads((self.dir / "project.json").read_text())
        except FileNotFoundError:
            return {}

    def _write_meta(self, meta: dict) -> None:
        atomic_write(self.dir / "project.json", json.dumps(meta, indent=1, sort_keys=True).encode())

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        self.dir.mkdir(parents=True, exist_ok=True)
        with open(self.dir / ".lock", "a+b") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    def claim(self, owner: str, classes: Sequence[str], admin: bool = False, **extra: object) -> dict:
        """Configure the project for `owner` (the first key to configure it owns it; NotOwner for
        another key unless admin). `classes`: the foreground class names masks index into."""
        with self.locked():
            meta = self.meta()
            if meta and meta.get("owner") != owner and not admin:
                raise NotOwner(f"{self.name} was configured with another API key")
            if not meta:
                meta = {"source": self.source, "project": self.project, "owner": owner, "created": time.time(),
                        "changes_since_fit": 0, "fits": []}
            meta["classes"] = list(classes)
            meta.update({k: v for k, v in extra.items() if v is not None})
            self._write_meta(meta)
            return meta

    def check_owner(self, owner: str, admin: bool = False) -> dict:
        meta = self.meta()
        if not meta:
            raise FileNotFoundError(f"{self.name} is not configured (no corrections yet)")
        if meta.get("owner") != owner and not admin:
            raise NotOwner(f"{self.name} belongs to another API key")
        return meta

    def update_meta(self, **changes: object) -> dict:
        with self.locked():
            meta = self.meta()
            meta.update(changes)
            self._write_meta(meta)
            return meta

    def record_fit(self, fit: dict) -> dict:
        """Append (or replace by id) a fit record; a new fit resets the new-corrections counter."""
        with self.locked():
            meta = self.meta()
            fits = [f for f in meta.get("fits", []) if f.get("id") != fit.get("id")]
            if not any(f.get("id") == fit.get("id") for f in meta.get("fits", [])):
                meta["changes_since_fit"] = 0
            meta["fits"] = [*fits, fit][-50:]
            self._write_meta(meta)
            return meta

    # --- items ---------------------------------------------------------------------------
    def item(self, image_id: str) -> dict | None:
        try:
            return json.loads((self.dir / "items" / f"{image_key(image_id)}.json").read_text())
        except FileNotFoundError:
            return None

    def items(self) -> list[dict]:
        out = []
        for p in sorted((self.dir / "items").glob("*.json")):
            with contextlib.suppress(FileNotFoundError, ValueError):
                out.append(json.loads(p.read_text()))
        return out

    def corrected(self) -> list[dict]:
        """The items with a corrected mask (not only a cached image)."""
        return [it for it in self.items() if it.get("mask")]

    def path(self, rel: str) -> Path:
        return self.dir / rel

    def check(self, c: Correction, classes: Sequence[str]) -> tuple[bytes | None, tuple[int, int]]:
        """Validate one correction against the project (no writes): mask values are classes of
        the project, labels are known, the mask has the image's size, the image exists.
        Returns the image bytes to store (None = the stored one) and the image's (H, W)."""
        image_key(c.image_id)  # the id must make a key
        mask = np.asarray(c.mask)
        if mask.ndim != 2 or mask.dtype != np.uint8:
            raise CorrectionError(f"{c.image_id}: the mask must be a 2-D uint8 label map")
        bad = sorted(set(np.unique(mask).tolist()) - {0, IGNORE_INDEX, *range(1, len(classes) + 1)})
        if bad:
            raise CorrectionError(f"{c.image_id}: mask values {bad[:5]} are no class of the project "
                                  f"({', '.join(classes)})")
        unknown = [n for n in c.labels if n not in classes]
        if unknown:
            raise CorrectionError(f"{c.image_id}: unknown labels {unknown} (project classes: {', '.join(classes)})")
        if c.image is not None:
            _ext, hw = _image_ext(c.image)
        else:
            old = self.item(c.image_id)
            if old is None or not old.get("image"):
                raise CorrectionError(f"{c.image_id}: an image we never saw (send the image with its mask)")
            hw = (int(old["height"]), int(old["width"]))
        if mask.shape != hw:
            raise CorrectionError(f"{c.image_id}: the mask is {mask.shape[1]}x{mask.shape[0]} but the image is "
                                  f"{hw[1]}x{hw[0]}")
        return c.image, hw

    def put_many(self, corrections: Sequence[Correction]) -> list[Change]:
        """Validate all, then store all (a bad one refuses the batch with nothing written)."""
        classes = list(self.meta().get("classes") or [])
        if not classes:
            raise CorrectionError(f"{self.name} is not configured with classes")
        ids = [c.image_id for c in corrections]
        dup = sorted({i for i in ids if ids.count(i) > 1})
        if dup:
            raise CorrectionError(f"image ids given twice: {dup[:5]}")
        checked = [self.check(c, classes) for c in corrections]
        with self.locked():
            changes = [self._put(c, img, hw) for c, (img, hw) in zip(corrections, checked, strict=True)]
            new = sum(ch in (Change.created, Change.updated) for ch in changes)
            if new:
                meta = self.meta()
                meta["changes_since_fit"] = int(meta.get("changes_since_fit", 0)) + new
                self._write_meta(meta)
        return changes

    def put(self, c: Correction) -> Change:
        return self.put_many([c])[0]

    def _put(self, c: Correction, image: bytes | None, hw: tuple[int, int]) -> Change:
        key = image_key(c.image_id)
        old = self.item(c.image_id)
        png = encode_png_label(np.asarray(c.mask))
        mask_sha = _sha(np.ascontiguousarray(c.mask).tobytes() + repr(hw).encode())[:16]
        labels = sorted(set(c.labels))
        if image is not None:
            ext, _ = _image_ext(image)
            image_rel = f"images/{key}-{_sha(image)[:16]}{ext}"
        else:
            assert old is not None  # check() said so
            image_rel = old["image"]
        mask_rel = f"masks/{key}-{mask_sha}.png"
        if old and old.get("image") == image_rel and old.get("mask") == mask_rel and old.get("labels") == labels:
            return Change.unchanged
        if image is not None and not (self.dir / image_rel).exists():
            atomic_write(self.dir / image_rel, image)
        if not (self.dir / mask_rel).exists():
            atomic_write(self.dir / mask_rel, png)
        record = {"image_id": c.image_id, "key": key, "image": image_rel, "mask": mask_rel, "labels": labels,
                  "height": hw[0], "width": hw[1], "ref": c.ref, "updated": time.time()}
        atomic_write(self.dir / "items" / f"{key}.json", json.dumps(record, sort_keys=True).encode())
        if old:
            self._drop_unused(old, record)
        return Change.updated if old and old.get("mask") else Change.created

    def put_image(self, image_id: str, image: bytes, ref: dict | None = None) -> Change:
        """Cache an image with no correction (a task nobody annotated yet: the fit pseudo-labels
        it); an image that already has a correction keeps it."""
        ext, hw = _image_ext(image)
        with self.locked():
            old = self.item(image_id)
            if old and old.get("mask"):
                return Change.unchanged
            key = image_key(image_id)
            image_rel = f"images/{key}-{_sha(image)[:16]}{ext}"
            if old and old.get("image") == image_rel:
                return Change.unchanged
            atomic_write(self.dir / image_rel, image)
            record = {"image_id": image_id, "key": key, "image": image_rel, "mask": None, "labels": None,
                      "height": hw[0], "width": hw[1], "ref": ref or {}, "updated": time.time()}
            atomic_write(self.dir / "items" / f"{key}.json", json.dumps(record, sort_keys=True).encode())
            if old:
                self._drop_unused(old, record)
            return Change.updated if old else Change.created

    def delete(self, image_id: str, keep_image: bool = True) -> Change:
        """Remove an image's correction. `keep_image`: the image stays cached (its task still
        exists; the next fit pseudo-labels it again)."""
        with self.locked():
            old = self.item(image_id)
            had_mask = bool(old and old.get("mask"))
            if old is None or (keep_image and not had_mask):
                return Change.absent
            path = self.dir / "items" / f"{image_key(image_id)}.json"
            if keep_image:
                record = dict(old, mask=None, labels=None, ref={"url": old.get("ref", {}).get("url")},
                              updated=time.time())
                atomic_write(path, json.dumps(record, sort_keys=True).encode())
            else:
                record = {}
                path.unlink()
            self._drop_unused(old, record)
            if not had_mask:  # only a cached image went
                return Change.absent
            meta = self.meta()
            meta["changes_since_fit"] = int(meta.get("changes_since_fit", 0)) + 1
            self._write_meta(meta)
            return Change.deleted

    def _drop_unused(self, old: dict, new: dict) -> None:
        for k in ("image", "mask"):
            if old.get(k) and old.get(k) != new.get(k):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self.dir / old[k])


class CorrectionStore:
    """All projects under `<data_dir>/corrections`."""

    def __init__(self, data_dir: Path) -> None:
        self.root = Path(data_dir) / "corrections"

    def project(self, source: str, project: str | int) -> ProjectStore:
        return ProjectStore(self.root, source, str(project))

    def projects(self) -> list[ProjectStore]:
        out = []
        if self.root.is_dir():
            for d in sorted(self.root.iterdir()):
                source, _, project = d.name.partition("-")
                if source in SOURCES and PROJECT_RE.match(project) and (d / "project.json").is_file():
                    out.append(ProjectStore(self.root, source, project))
        return out
