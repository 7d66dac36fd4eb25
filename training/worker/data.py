"""A training's data, made uniform: whatever the source (an extracted archive, a folder under
the allowed root, a pseudo-label job's images and labels, a VOC-like or synth set), the
trainer reads `<workdir>/dataset/` in the folder layout

    dataset/images/<id><ext>          symbolic links to the source images (nothing is copied)
    dataset/labels.csv                id,class;class (the image-level tags)
    dataset/classes.txt               background first: fixes the class order
    dataset/SegmentationClass/<id>.png   links to the ground truth, where there is some
    split/train.txt  split/heldout.txt   ids; held-out = a share of the images with ground truth

The held-out images never reach a trainer; the evaluation scores the new version and the
promoted one on them. Bounds: at most `spec.max_images` images, and the source images'
bytes count against `spec.max_disk_bytes` (their links cost nothing, the run's files do).
"""
from __future__ import annotations

import csv
import hashlib
import io
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from seam.training.data.datasets import GT_DIRNAME, DatasetError, ImageLabelSet, build_dataset, detect_dataset_kind

from seam.common.files import LABEL_FILE_NAMES
from seam.modelrepo.trainings import TrainingSpec

DATASET_DIR = "dataset"
SPLIT_DIR = "split"


class DataError(ValueError):
    """The data cannot be trained on as given; the message says why."""


@dataclass(frozen=True)
class PreparedData:
    root: Path  # workdir/dataset (folder layout)
    train_list: Path
    heldout: list[str]  # ids with ground truth kept out of training
    class_names: list[str]  # background first
    num_train: int
    gt_dir: Path | None
    tags: dict[str, list[int]]  # foreground indices of every image (the image-level labels)

    def heldout_items(self) -> list[tuple[str, Path, Path, list[int]]]:
        """(id, image, ground-truth PNG, tags) of the held-out split."""
        if self.gt_dir is None:
            return []
        images = {p.stem: p for p in (self.root / "images").iterdir()}
        return [(i, images[i], self.gt_dir / f"{i}.png", self.tags[i]) for i in self.heldout]


def source_root(root: Path) -> Path:
    """An extracted archive often has one top folder (`mydata/images/...`): the folder that holds
    the label file or the VOC layout, else `root`."""
    if not root.is_dir() or any((root / n).is_file() for n in LABEL_FILE_NAMES) or (root / "JPEGImages").is_dir():
        return root
    subs = [p for p in root.iterdir() if p.is_dir() and not p.name.startswith((".", "__MACOSX"))]
    if len(subs) == 1:
        return source_root(subs[0])
    return root


def load_source(spec: TrainingSpec) -> ImageLabelSet:
    """The source data set, with the spec's classes (background first) when given."""
    root = source_root(Path(spec.data.root))
    kind = detect_dataset_kind(root)
    train_list = None
    if kind in ("synth", "voc") and (root / "ImageSets" / "Segmentation" / "trainval.txt").is_file():
        train_list = root / "ImageSets" / "Segmentation" / "trainval.txt"  # every image: the split is ours
    try:
        return build_dataset(kind, root, train_list, spec.data.labels, spec.classes)
    except DatasetError as exc:
        raise DataError(str(exc)) from exc


def _heldout_ids(ds: ImageLabelSet, fraction: float, min_train: int) -> list[str]:
    """A deterministic share of the images with ground truth (ordered by a hash of the id, so
    the split does not follow file names), leaving at least `min_train` training images."""
    with_gt = [i for i in ds.ids if ds.gt_path(i) is not None]
    if fraction <= 0 or len(with_gt) < 2:
        return []
    n = max(1, round(len(with_gt) * fraction))
    n = min(n, len(ds.ids) - min_train)
    if n < 1:
        return []
    return sorted(sorted(with_gt, key=lambda i: hashlib.sha1(i.encode()).hexdigest())[:n])


def _link(src: Path, dst: Path) -> None:
    if dst.is_symlink() or dst.exists():
        dst.unlink()
    os.symlink(src.resolve(), dst)


def prepare_data(spec: TrainingSpec, workdir: Path, min_train: int = 1) -> PreparedData:
    """Write dataset/ and split/ under `workdir` (again on a restart: same result)."""
    ds = load_source(spec)
    if len(ds) > spec.max_images:
        raise DataError(f"the data set has {len(ds)} images; the limit is {spec.max_images}")
    size = sum(p.stat().st_size for p in ds.paths)
    if size > spec.max_disk_bytes:
        raise DataError(f"the images take {size} bytes; the limit is {spec.max_disk_bytes}")
    heldout = _heldout_ids(ds, spec.heldout_fraction, min_train)
    out = workdir / DATASET_DIR
    shutil.rmtree(out, ignore_errors=True)
    (out / "images").mkdir(parents=True)
    rows = io.StringIO()
    w = csv.writer(rows)
    w.writerow(["image", "labels"])
    fg = ds.foreground
    for i, p, lab in zip(ds.ids, ds.paths, ds.labels, strict=True):
        _link(p, out / "images" / f"{i}{p.suffix.lower()}")
        w.writerow([i, ";".join(fg[int(c)] for c in np.flatnonzero(lab > 0.5))])
    (out / "labels.csv").write_text(rows.getvalue())
    (out / "classes.txt").write_text("".join(f"{c}\n" for c in ds.class_names))
    gt_dir = None
    if any(ds.gt_path(i) is not None for i in ds.ids):
        gt_dir = out / GT_DIRNAME
        gt_dir.mkdir()
        for i in ds.ids:
            g = ds.gt_path(i)
            if g is not None:
                _link(g, gt_dir / f"{i}.png")
    split = workdir / SPLIT_DIR
    split.mkdir(exist_ok=True)
    held = set(heldout)
    train_ids = [i for i in ds.ids if i not in held]
    (split / "train.txt").write_text("".join(f"{i}\n" for i in train_ids))
    (split / "heldout.txt").write_text("".join(f"{i}\n" for i in heldout))
    tags = {i: [int(c) for c in np.flatnonzero(lab > 0.5)] for i, lab in zip(ds.ids, ds.labels, strict=True)}
    return PreparedData(out, split / "train.txt", heldout, list(ds.class_names), len(train_ids), gt_dir, tags)


def disk_usage(path: Path) -> int:
    """Bytes of the regular files under `path` (links not followed: the source images are not ours)."""
    total = 0
    for dirpath, _dirs, files in os.walk(path):
        for f in files:
            p = Path(dirpath) / f
            if not p.is_symlink():
                try:
                    total += p.stat().st_size
                except OSError:
                    continue
    return total
