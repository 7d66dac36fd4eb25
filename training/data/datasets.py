"""Image-level labelled training sets and the table of their kinds (`DATASETS`): VOC12
(+SBD train_aug), a generic image folder, and the synthetic VOC-layout sets of
`seam.training.data.synth`. Torch-free: the command line reads the table (--dataset).

Each loader returns an `ImageLabelSet` (ids, image paths, multi-hot labels, class
names with background first, where ground truth lives);
`seam.training.data.augment.AugmentedDataset` turns it into the torch dataset the SEAM
trainer reads. The class names decide the head (num_classes = foreground + 1), the CAM
files and the evaluation. A table entry (`DatasetKind`) says how a kind is detected
(`--dataset auto`), loaded and which recipe each stage gets on it by default.
"""
from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image
from seam.training.data.label_png import read_label_png

from seam.common.classes import IGNORE_INDEX, VOC_CLASSES
from seam.common.files import IMAGE_EXTENSIONS, LABEL_FILE_NAMES, list_images, load_label_file, read_label_table

GT_DIRNAME = "SegmentationClass"


class DatasetError(ValueError):
    """A data set that cannot be used as given; the message says what and where."""


def shared_voc12_dir() -> Path:
    """The authors' VOC12 lists and cls_labels.npy: $SEAM_VOC12_DIR, else ../shared/voc12."""
    env = os.environ.get("SEAM_VOC12_DIR")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[3] / "shared" / "voc12"


@dataclass
class ImageLabelSet:
    """Images with image-level labels.

    labels: (N, num_fg) float32 multi-hot, aligned with ids/paths.
    class_names: background first. label_table: every labelled id of the label file
    (a superset of ids), used for evaluation lists. gt_dir: VOC-style label PNGs, if any.
    """

    kind: str
    ids: list[str]
    paths: list[Path]
    labels: np.ndarray
    class_names: list[str]
    image_root: Path
    gt_dir: Path | None = None
    label_table: dict[str, list[int]] = field(default_factory=dict, repr=False)
    source: dict[str, str] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def foreground(self) -> list[str]:
        return list(self.class_names[1:])

    def fingerprint(self) -> str:
        """sha256 over class names, ids and labels: identifies the training data of a run."""
        h = hashlib.sha256()
        h.update(("\t".join(self.class_names) + "\n").encode())
        for i, row in zip(self.ids, self.labels, strict=True):
            h.update(f"{i}\t{','.join(str(int(c)) for c in np.flatnonzero(row > 0.5))}\n".encode())
        return h.hexdigest()

    def label_indices(self, image_id: str) -> list[int]:
        return list(self.label_table[image_id])

    def gt_path(self, image_id: str) -> Path | None:
        if self.gt_dir is None:
            return None
        p = self.gt_dir / f"{image_id}.png"
        return p if p.is_file() else None

    def class_counts(self) -> dict[str, int]:
        return {name: int(n) for name, n in zip(self.foreground, self.labels.sum(0), strict=True)}


def _multi_hot(indices: Sequence[int], num_fg: int) -> np.ndarray:
    v = np.zeros(num_fg, np.float32)
    v[list(indices)] = 1.0
    return v


def _few(items: Sequence[str], n: int = 3) -> str:
    return ", ".join(repr(i) for i in items[:n]) + (f" (+{len(items) - n} more)" if len(items) > n else "")


def verify_images(paths: Sequence[Path]) -> None:
    """Read every image header (cheap, no decoding); DatasetError lists unreadable files."""
    bad = []
    for p in paths:
        try:
            with Image.open(p) as im:
                im.size  # noqa: B018 - header parsed by open
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
            bad.append(f"{p} ({type(exc).__name__}: {exc})")
    if bad:
        raise DatasetError(f"{len(bad)} unreadable images, first: {bad[0]}")


def read_class_names(path: str | Path) -> list[str]:
    """classes.txt: one name per line, background first (added when absent)."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"class list not found: {path}")
    names = [ln.strip() for ln in path.read_text().splitlines() if ln.strip()]
    if not names:
        raise DatasetError(f"{path} lists no classes")
    return _with_background(names, str(path))


def _with_background(names: Sequence[str], where: str) -> list[str]:
    names = [str(n).strip() for n in names if str(n).strip()]
    if names and names[0].lower() == "background":
        names = names[1:]
    if not names:
        raise DatasetError(f"{where}: no foreground classes")
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise DatasetError(f"{where}: duplicate class names {dup}")
    if any(n.lower() == "background" for n in names):
        raise DatasetError(f"{where}: 'background' may only come first")
    return ["background", *names]


def _resolve_list(list_file: Path, image_root: Path) -> list[tuple[str, Path]]:
    try:
        return list_images(list_file, image_root)
    except FileNotFoundError as exc:
        raise DatasetError(f"{list_file}: {exc}") from exc


def _labels_for(ids: Sequence[str], table: dict[str, list[int]], label_file: Path, num_fg: int) -> np.ndarray:
    missing = [i for i in ids if i not in table]
    if missing:
        raise DatasetError(f"{len(missing)} images have no labels in {label_file}: {_few(missing)}")
    return np.stack([_multi_hot(table[i], num_fg) for i in ids]) if ids else np.zeros((0, num_fg), np.float32)


def _load_table(label_file: Path, foreground: Sequence[str]) -> dict[str, list[int]]:
    try:
        return load_label_file(label_file, foreground)
    except FileNotFoundError as exc:
        raise DatasetError(str(exc)) from exc
    except (ValueError, OSError) as exc:
        raise DatasetError(f"{label_file}: {exc}") from exc


def _voc_layout(kind: str, data: Path, list_file: Path, label_file: Path, class_names: list[str],
                check_images: bool) -> ImageLabelSet:
    image_root = data / "JPEGImages"
    if not image_root.is_dir():
        raise DatasetError(f"no JPEGImages/ folder in {data}")
    if not list_file.is_file():
        raise DatasetError(f"image list not found: {list_file}")
    items = _resolve_list(list_file, image_root)
    if not items:
        raise DatasetError(f"{list_file} lists no images")
    table = _load_table(label_file, class_names[1:])
    return _labelled_set(kind, data, items, table, label_file, class_names, image_root, check_images,
                         {"list": str(list_file), "labels": str(label_file)})


def _labelled_set(kind: str, data: Path, items: list[tuple[str, Path]], table: dict[str, list[int]],
                  label_file: Path, class_names: list[str], image_root: Path, check_images: bool,
                  sources: dict[str, str]) -> ImageLabelSet:
    ids = [i for i, _ in items]
    labels = _labels_for(ids, table, label_file, len(class_names) - 1)
    paths = [p for _, p in items]
    if check_images:
        verify_images(paths)
    gt = data / GT_DIRNAME
    return ImageLabelSet(kind, ids, paths, labels, class_names, image_root, gt if gt.is_dir() else None, table,
                         sources)


def load_voc(data: str | Path, train_list: str | Path | None = None, labels: str | Path | None = None,
             check_images: bool = True) -> ImageLabelSet:
    """PASCAL VOC 2012 (+ SBD): `data` holds JPEGImages/ (and SegmentationClass/ for evaluation).

    Defaults are the authors' files in `shared_voc12_dir()`: train_aug.txt (10,582 ids)
    and cls_labels.npy (id -> float32[20]). Any list (ids or VOC-style paths) and any
    label file (npy / JSON / CSV) of the user's own may replace them.
    """
    data = Path(data)
    shared = shared_voc12_dir()
    list_file = Path(train_list) if train_list else shared / "train_aug.txt"
    label_file = Path(labels) if labels else shared / "cls_labels.npy"
    class_names = list(VOC_CLASSES)
    if (data / "classes.txt").is_file():
        class_names = read_class_names(data / "classes.txt")
    return _voc_layout("voc", data, list_file, label_file, class_names, check_images)


def load_synth(data: str | Path, train_list: str | Path | None = None, labels: str | Path | None = None,
               split: str = "train", check_images: bool = True) -> ImageLabelSet:
    """A `seam synth` set: VOC layout plus classes.txt; defaults ImageSets/Segmentation/<split>.txt
    and the set's own cls_labels.npy."""
    data = Path(data)
    list_file = Path(train_list) if train_list else data / "ImageSets" / "Segmentation" / f"{split}.txt"
    label_file = Path(labels) if labels else data / "cls_labels.npy"
    return _voc_layout("synth", data, list_file, label_file, read_class_names(data / "classes.txt"), check_images)


def _label_file_names(path: Path) -> list[str]:
    """Class names in order of first appearance in a CSV/TSV/JSON label file (indices skipped)."""
    try:
        table = read_label_table(path)
    except (ValueError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{path}: {exc}") from exc
    tokens = (str(t).strip() for labels in table.values() for t in labels)
    return list(dict.fromkeys(t for t in tokens if t and not t.lstrip("-").isdigit()))


def _folder_images(data: Path) -> Path:
    for sub in ("JPEGImages", "images"):
        if (data / sub).is_dir():
            return data / sub
    return data


def load_folder(data: str | Path, labels: str | Path | None = None, classes: str | Sequence[str] | None = None,
                train_list: str | Path | None = None, check_images: bool = True) -> ImageLabelSet:
    """A folder of images plus a label file mapping image -> class names, any number of classes.

    Images: `data/JPEGImages/`, `data/images/` or `data` itself. Labels: `--labels`, else
    `data/labels.{csv,json,tsv}`; CSV rows `image,class;class`, JSON `{image: [classes]}`.
    Class names: `classes` (a list, comma-separated string or classes.txt path), else
    `data/classes.txt`, else every name the label file uses, sorted. The training set is
    every labelled image (or the ids of `train_list`); images without labels are skipped.
    """
    data = Path(data)
    if not data.is_dir():
        raise DatasetError(f"image folder not found: {data}")
    image_root = _folder_images(data)
    label_file = Path(labels) if labels else next((data / n for n in LABEL_FILE_NAMES if (data / n).is_file()), None)
    if label_file is None:
        raise DatasetError(f"no label file: pass --labels or put one of {', '.join(LABEL_FILE_NAMES)} in {data}")
    if not label_file.is_file():
        raise DatasetError(f"label file not found: {label_file}")
    if classes is None and (data / "classes.txt").is_file():
        classes = str(data / "classes.txt")
    if isinstance(classes, str):
        class_names = (read_class_names(classes) if Path(classes).is_file()
                       else _with_background(classes.split(","), "--classes"))
    elif classes is not None:
        class_names = _with_background(list(classes), "--classes")
    else:
        names = sorted(n for n in _label_file_names(label_file) if n.lower() != "background")
        if not names:
            raise DatasetError(f"{label_file}: no class names; give them with --classes or classes.txt")
        class_names = _with_background(names, str(label_file))
    table = _load_table(label_file, class_names[1:])
    if train_list:
        items = _resolve_list(Path(train_list), image_root)
    else:
        by_stem = {p.stem: p for p in sorted(image_root.iterdir())
                   if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS}
        missing = [i for i in table if i not in by_stem]
        if missing:
            raise DatasetError(f"{len(missing)} labelled images not found in {image_root}: {_few(missing)}")
        items = [(i, by_stem[i]) for i in sorted(table)]
    if not items:
        raise DatasetError(f"no labelled images in {image_root}")
    return _labelled_set("folder", data, items, table, label_file, class_names, image_root, check_images,
                         {"labels": str(label_file), **({"list": str(train_list)} if train_list else {})})


@dataclass(frozen=True)
class DatasetRequest:
    """What the command line / a config says about the data: the root and the optional
    overrides every loader may read (a loader ignores what its layout does not use)."""

    data: Path
    train_list: str | Path | None = None
    labels: str | Path | None = None
    classes: str | Sequence[str] | None = None
    check_images: bool = True


@dataclass(frozen=True)
class DatasetKind:
    """One entry of the data set table: how a layout is recognised, loaded and trained.

    detect: does this root look like this kind? None: never auto-detected (the fallback).
    recipes: the recipe each stage (seam | affinity | deeplab) gets without --recipe;
      a stage not listed gets `release`.
    """

    name: str
    description: str  # one line: the layout
    load: Callable[[DatasetRequest], ImageLabelSet]
    detect: Callable[[Path], bool] | None = None
    recipes: Mapping[str, str] = field(default_factory=dict)


# Every dataset kind, in detection order: `auto` takes the first whose `detect` claims the
# root, else FALLBACK_KIND. A new kind is one `register_dataset` call (or one entry here);
# the CLI's --dataset choices, `auto`, the trainers and the default recipes all read it.
DATASETS: dict[str, DatasetKind] = {}
AUTO = "auto"
FALLBACK_KIND = "folder"
DATASET_HELP = "Data set kind; auto: detected from the layout."


def register_dataset(kind: DatasetKind, before: str | None = None) -> DatasetKind:
    """Add `kind` to the table (detected before the kind named `before`, else after the others)."""
    if kind.name == AUTO or kind.name in DATASETS:
        raise ValueError(f"dataset kind {kind.name!r} is already taken")
    items = list(DATASETS.items())
    at = [n for n, _ in items].index(before) if before is not None else len(items)
    items.insert(at, (kind.name, kind))
    DATASETS.clear()
    DATASETS.update(items)
    return kind


def dataset_choices() -> tuple[str, ...]:
    """The values --dataset takes: auto, then every kind of the table."""
    return (AUTO, *DATASETS)


def detect_dataset_kind(data: str | Path) -> str:
    """The first kind of the table whose detector claims `data`, else FALLBACK_KIND."""
    data = Path(data)
    return next((k.name for k in DATASETS.values() if k.detect is not None and k.detect(data)), FALLBACK_KIND)


def default_recipe(dataset_kind: str, stage: str = "seam") -> str:
    """The recipe a `stage` (seam | affinity | deeplab) run on `dataset_kind` gets without --recipe."""
    kind = DATASETS.get(dataset_kind)
    return kind.recipes.get(stage, "release") if kind is not None else "release"


def _class_names_given(classes: str | Sequence[str]) -> list[str]:
    """--classes as class names, background first: a classes.txt path or a comma list."""
    if isinstance(classes, str) and Path(classes).is_file():
        return read_class_names(classes)
    return _with_background(classes.split(",") if isinstance(classes, str) else list(classes), "--classes")


def build_dataset(kind: str, data: str | Path, train_list: str | Path | None = None,
                  labels: str | Path | None = None, classes: str | Sequence[str] | None = None,
                  check_images: bool = True) -> ImageLabelSet:
    """The set of kind `kind` (a name of DATASETS, or auto: detected from the layout) at `data`.
    `classes`, when given, must match the set's class names (a folder set takes them as its own)."""
    if kind not in dataset_choices():
        raise DatasetError(f"unknown dataset kind {kind!r}; choose from {', '.join(dataset_choices())}")
    data = Path(data)
    if not data.is_dir():
        raise DatasetError(f"data directory not found: {data}")
    if kind == AUTO:
        kind = detect_dataset_kind(data)
    ds = DATASETS[kind].load(DatasetRequest(data, train_list, labels, classes, check_images))
    if classes is not None:
        want = _class_names_given(classes)
        if want != ds.class_names:
            raise DatasetError(f"--classes {want[1:]} differ from the data set's {ds.class_names[1:]}")
    return ds


def _synth_layout(data: Path) -> bool:
    return (data / "JPEGImages").is_dir() and (data / "classes.txt").is_file() and (data / "cls_labels.npy").is_file()


def _voc_layout_without_label_table(data: Path) -> bool:
    return (data / "JPEGImages").is_dir() and not any((data / n).is_file() for n in LABEL_FILE_NAMES)


# VOC trains as the authors did. Other data would get `tuned` only if the ablation showed it
# better; on the synthetic set it was worse (3 seeds, docs/training.md "Ablation"), so SEAM and
# AffinityNet default to `release` everywhere. DeepLab off VOC keeps `tuned`: the release's
# 20000 iterations and batch statistics are VOC-sized, not a default for small folder sets.
_OFF_VOC_RECIPES = {"seam": "release", "affinity": "release", "deeplab": "tuned"}
register_dataset(DatasetKind(
    "synth", "a `seam synth` set: VOC layout + classes.txt + cls_labels.npy",
    lambda r: load_synth(r.data, r.train_list, r.labels, check_images=r.check_images),
    _synth_layout, _OFF_VOC_RECIPES))
register_dataset(DatasetKind(
    "voc", "PASCAL VOC 2012 (+SBD): JPEGImages/, the authors' train_aug list and cls_labels.npy",
    lambda r: load_voc(r.data, r.train_list, r.labels, r.check_images),
    _voc_layout_without_label_table, {"seam": "release", "affinity": "release", "deeplab": "release"}))
register_dataset(DatasetKind(
    "folder", "an image folder + labels.csv/json/tsv (image -> class names)",
    lambda r: load_folder(r.data, r.labels, r.classes, r.train_list, r.check_images),
    None, _OFF_VOC_RECIPES))


def eval_items(ds: ImageLabelSet, eval_list: str | Path | None) -> list[tuple[str, Path, list[int]]]:
    """(id, image path, foreground labels) of the images to score CAM pseudo labels on.

    eval_list None = the training list (the paper scores VOC *train*). Only ids with a
    ground-truth PNG are kept. Labels come from the label file, else from the PNG.
    """
    if ds.gt_dir is None:
        return []
    items = list(zip(ds.ids, ds.paths, strict=True)) if eval_list is None else _resolve_list(Path(eval_list),
                                                                                               ds.image_root)
    out = []
    for i, p in items:
        gt = ds.gt_path(i)
        if gt is None:
            continue
        if i in ds.label_table:
            lab = ds.label_indices(i)
        else:
            g = read_label_png(gt)
            lab = sorted(int(c) - 1 for c in np.unique(g) if 0 < c < ds.num_classes and c != IGNORE_INDEX)
        out.append((i, p, lab))
    return out
