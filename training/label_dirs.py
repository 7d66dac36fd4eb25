"""Label directories written image by image from a model: AffinityNet labels from SEAM's
CAMs (`write_affinity_labels`), random-walk pseudo labels (`random_walk_dir`), DeepLab
predictions (`segment_dir`). Each skips the images whose output exists (unless
`overwrite`), so an interrupted run continues; `seam rw`, `seam segment`, `seam train
affinity --from-cams` and the pipeline's stages call them."""
from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from seam.common.affinity_labels import HA_ALPHA, LA_ALPHA, affinity_scores, scores_label_map, write_scores
from seam.common.image import load_rgb
from seam.common.options import setting
from seam.common.palette import label_to_pil
from seam.common.random_walk import DEFAULT_ALPHA, DEFAULT_BETA, DEFAULT_LOGT, DEFAULT_RADIUS, random_walk_labels

OnImage = Callable[[str], None] | None


def missing_outputs(items: Sequence[tuple[str, Path]], out_dir: Path, suffix: str,
                    overwrite: bool = False) -> list[tuple[str, Path]]:
    """The (id, image) items without <out_dir>/<id><suffix> (every item with `overwrite`)."""
    return [(i, p) for i, p in items if overwrite or not (out_dir / f"{i}{suffix}").is_file()]


def _save_png(label: np.ndarray, path: Path) -> None:
    tmp = path.with_name(path.stem + ".tmp.png")
    label_to_pil(label).save(tmp)
    tmp.replace(path)  # a stage killed mid-write never leaves a truncated PNG behind


def _write_pngs(todo: Sequence[tuple[str, Path]], out_dir: Path, label_of: Callable[[str, Path], np.ndarray],
                on_image: OnImage) -> None:
    """<out_dir>/<id>.png = label_of(id, image path) for every item of `todo`."""
    for image_id, path in todo:
        _save_png(label_of(image_id, path), out_dir / f"{image_id}.png")
        if on_image is not None:
            on_image(image_id)


def _cams_and_image(cam_dir: Path, image_id: str, path: Path) -> tuple[list[int], np.ndarray, np.ndarray]:
    """(foreground classes, (K, H, W) CAMs from <cam_dir>/<id>.npz or .npy, (H, W, 3) image)."""
    from seam.training.evaluation.evaluate import find_cam_file, load_cams

    cam_file = find_cam_file(cam_dir, image_id)
    if cam_file is None:
        raise FileNotFoundError(f"no CAM file {cam_dir / image_id}.npz or .npy")
    classes, cams = load_cams(cam_file)
    return classes, cams, load_rgb(path)


def write_affinity_labels(items: Sequence[tuple[str, Path]], cam_dir: Path, out_dir: Path,
                          la_alpha: float = LA_ALPHA, ha_alpha: float = HA_ALPHA, crf: bool = True,
                          overwrite: bool = False, on_image: OnImage = None) -> dict[str, Any]:
    """AffinityNet labels from <cam_dir>/<id>.npy for (id, image path): <out_dir>/<id>.npz, the la / ha
    posteriors the training reduces to stride 8 as the release, and <out_dir>/<id>.png, their
    per-pixel labels (written last: it marks the image done)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    todo = missing_outputs(items, out_dir, ".png", overwrite)
    counts = np.zeros(3, np.int64)  # bg, fg, unknown pixels of the images written now

    def label_of(image_id: str, path: Path) -> np.ndarray:
        classes, cams, rgb = _cams_and_image(cam_dir, image_id, path)
        if classes and cams.shape[1:] != rgb.shape[:2]:
            raise ValueError(f"{cam_dir / f'{image_id}.npy'}: CAM size {cams.shape[1:]} differs from the image "
                             f"{rgb.shape[:2]}")
        la, ha = affinity_scores(rgb, cams, classes, la_alpha, ha_alpha, crf=crf)
        write_scores(out_dir / f"{image_id}.npz", la, ha, classes)
        lab = scores_label_map(la, ha, classes)
        counts[:] += [(lab == 0).sum(), ((lab > 0) & (lab < 255)).sum(), (lab == 255).sum()]
        return lab

    _write_pngs(todo, out_dir, label_of, on_image)
    total = max(int(counts.sum()), 1)
    return {"written": len(todo), "skipped": len(items) - len(todo),
            "share": {"background": counts[0] / total, "foreground": counts[1] / total, "unknown": counts[2] / total}
            if todo else None}


@dataclass(frozen=True)
class RandomWalkConfig:
    alpha: float = setting(DEFAULT_ALPHA, help="Random walk: background channel (1 - max CAM)^alpha.")
    beta: float = setting(DEFAULT_BETA, help="Random walk: affinities raised to beta.")
    logt: int = setting(DEFAULT_LOGT, help="Random walk: walk length 2^logt.")
    radius: int = setting(DEFAULT_RADIUS, help="Random walk: affinity radius on the stride-8 grid.")
    dense: bool = setting(False, help=(
        "Random walk: the authors' dense T^(2^logt) instead of sparse propagation (slow; for comparison)."))


def random_walk_dir(model: Any, items: Sequence[tuple[str, Path]], cam_dir: Path, out_dir: Path,
                    cfg: RandomWalkConfig = RandomWalkConfig(), device: str = "cpu", overwrite: bool = False,
                    on_image: OnImage = None) -> dict[str, Any]:
    """<out_dir>/<id>.png random-walk pseudo labels: AffinityNet features (torch) + the shared
    numpy random walk of <cam_dir>/<id>.npy."""
    from seam.training.inference.segment import affinity_features

    out_dir.mkdir(parents=True, exist_ok=True)
    todo = missing_outputs(items, out_dir, ".png", overwrite)
    t_walk = 0.0

    def label_of(image_id: str, path: Path) -> np.ndarray:
        nonlocal t_walk
        classes, cams, rgb = _cams_and_image(cam_dir, image_id, path)
        H, W = rgb.shape[:2]
        if not classes:
            cams = np.zeros((0, H, W), np.float32)
        feat = affinity_features(model, rgb, device)
        t0 = time.perf_counter()
        lab = random_walk_labels(feat, cams, classes, (H, W), cfg.alpha, cfg.beta, cfg.logt, cfg.radius,
                                 dense=cfg.dense)
        t_walk += time.perf_counter() - t0
        return lab

    _write_pngs(todo, out_dir, label_of, on_image)
    return {"written": len(todo), "skipped": len(items) - len(todo),
            "walk_ms_per_image": round(1000 * t_walk / len(todo), 2) if todo else None}


def segment_dir(model: Any, items: Sequence[tuple[str, Path]], out_dir: Path, scales: Sequence[float],
                flip: bool = True, crf: bool = False, device: str = "cpu", overwrite: bool = False,
                on_image: OnImage = None) -> dict[str, Any]:
    """<out_dir>/<id>.png DeepLab predictions."""
    from seam.training.inference.segment import segment_label

    out_dir.mkdir(parents=True, exist_ok=True)
    todo = missing_outputs(items, out_dir, ".png", overwrite)
    _write_pngs(todo, out_dir, lambda _id, path: segment_label(model, load_rgb(path), scales, flip, crf, device),
                on_image)
    return {"written": len(todo), "skipped": len(items) - len(todo)}


def write_classes(out_dir: Path, class_names: Sequence[str]) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "classes.txt").write_text("".join(f"{c}\n" for c in class_names))
