"""A fit's training data, made from a project's corrections store:

    <out>/images/<key><ext>    every image of the project (corrected or only cached)
    <out>/labels.csv           image-level labels: the corrected ones, else the pseudo mask's classes
    <out>/classes.txt          background + the project's classes
    <out>/pseudo/<key>.png     per-image label PNGs: the corrected mask where there is one, else the
                               current model's pseudo label (`pseudo_label`), 255 = ignore
    <out>/fit.json             which images were corrected, which pseudo-labelled

That is the "images + labels.csv" layout and the `pseudo_labels_dir` of a training spec
(docs/corrections.md): DeepLab trains on the corrected masks in place of the pseudo labels,
with the corrected image-level labels in place of the weak ones.
"""
from __future__ import annotations

import csv
import io
import json
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from seam.service.corrections.store import CorrectionError, ProjectStore

from seam.common.encoders import encode_png_label

# (image bytes, image-level class indices or None = let the model predict) -> (H, W) uint8 label map
PseudoLabeller = Callable[[bytes, Sequence[int] | None], np.ndarray]


@dataclass
class FitData:
    root: Path
    images: int
    corrected: int
    pseudo: int
    classes: list[str]

    @property
    def data_dir(self) -> Path:
        return self.root

    @property
    def pseudo_dir(self) -> Path:
        return self.root / "pseudo"


def _present(mask: np.ndarray, n: int) -> list[int]:
    vals = np.unique(mask)
    return [int(v) - 1 for v in vals if 1 <= v <= n]


def write_fit_data(store: ProjectStore, out: Path, pseudo_label: PseudoLabeller | None,
                   min_corrected: int = 1) -> FitData:
    """Write the project's training data into `out` (replaced). `pseudo_label` labels the images
    nobody corrected; None leaves them out (a fit on the corrected images only)."""
    classes = list(store.meta().get("classes") or [])
    items = store.items()
    corrected = [it for it in items if it.get("mask")]
    if len(corrected) < min_corrected:
        raise CorrectionError(f"{store.name} has {len(corrected)} corrected images; a fit needs at least "
                              f"{min_corrected}")
    if out.exists():
        shutil.rmtree(out)
    (out / "images").mkdir(parents=True)
    (out / "pseudo").mkdir()
    rows: list[tuple[str, list[str]]] = []
    n_pseudo = 0
    for it in items:
        key, image_path = it["key"], store.path(it["image"])
        try:
            data = image_path.read_bytes()
        except FileNotFoundError:  # replaced under us by a newer correction: the next fit has it
            continue
        if it.get("mask"):
            shutil.copyfile(store.path(it["mask"]), out / "pseudo" / f"{key}.png")
            labels = list(it.get("labels") or [])
        elif pseudo_label is not None:
            weak = [n for n in (it.get("ref") or {}).get("weak") or [] if n in classes]
            mask = pseudo_label(data, [classes.index(n) for n in weak] if weak else None)
            (out / "pseudo" / f"{key}.png").write_bytes(encode_png_label(mask))
            labels = weak or [classes[i] for i in _present(mask, len(classes))]
        else:
            continue
        if not labels:  # the folder layout skips unlabelled images; background-only ones have no class
            (out / "pseudo" / f"{key}.png").unlink()
            continue
        (out / "images" / f"{key}{image_path.suffix}").write_bytes(data)
        rows.append((key, labels))
        n_pseudo += not it.get("mask")
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["image", "labels"])
    for key, labels in rows:
        w.writerow([key, ";".join(labels)])
    (out / "labels.csv").write_text(buf.getvalue())
    (out / "classes.txt").write_text("\n".join(["background", *classes]) + "\n")
    n_corr = len(rows) - n_pseudo
    summary = {"project": store.name, "images": len(rows), "corrected": n_corr, "pseudo": n_pseudo,
               "classes": classes}
    (out / "fit.json").write_text(json.dumps(summary, indent=1))
    return FitData(out, len(rows), n_corr, n_pseudo, classes)
