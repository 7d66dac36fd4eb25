"""The whole SEAM pipeline in one call: SEAM -> CAMs -> AffinityNet labels -> AffinityNet
-> random walk -> DeepLab, plus the per-directory stage functions the CLI commands use
(`write_affinity_labels`, `random_walk_dir`, `segment_dir`).

Run directory (every stage skipped when its outputs exist, trainers resumed from their
checkpoint.pth when interrupted):

    seam/        seam_final.pth + .json           (training.engine.trainer)
    cams/        <id>.npy  {fg class: HxW}        training images, known image labels
    aff_labels/  <id>.png  0 / c+1 / 255          (seam.common.affinity_labels)
    affinity/    affinity_final.pth + .json
    rw/          <id>.png  random-walk pseudo labels (+ classes.txt)
    deeplab/     deeplab_final.pth + .json
    segment/     <id>.png  DeepLab predictions (training and evaluation images)
    results.json every stage's settings, timings and mIoU

mIoU (when SegmentationClass/ exists): CAM and random-walk pseudo labels on the
training images (the paper's "train" numbers), DeepLab on the evaluation list (val)
and on the training images.
"""
from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from seam.common.affinity_labels import HA_ALPHA, LA_ALPHA, affinity_label_map
from seam.common.cam import DEFAULT_BG_THRESHOLD, DEFAULT_SCALES
from seam.common.image import load_rgb
from seam.common.palette import label_to_pil
from seam.common.random_walk import DEFAULT_ALPHA, DEFAULT_BETA, DEFAULT_LOGT, DEFAULT_RADIUS, random_walk_labels

OnImage = Callable[[str], None] | None
Log = Callable[[str], None]


# --------------------------------------------------------------------------- per-directory stages

def _todo(items: Sequence[tuple[str, Path]], out_dir: Path, suffix: str, overwrite: bool) -> list[tuple[str, Path]]:
    return [(i, p) for i, p in items if overwrite or not (out_dir / f"{i}{suffix}").is_file()]


def _save_png(label: np.ndarray, path: Path) -> None:
    tmp = path.with_name(path.stem + ".tmp.png")
    label_to_pil(label).save(tmp)
    tmp.replace(path)  # a stage killed mid-write never leaves a truncated PNG behind


def write_affinity_labels(items: Sequence[tuple[str, Path]], cam_dir: Path, out_dir: Path,
                          la_alpha: float = LA_ALPHA, ha_alpha: float = HA_ALPHA, crf: bool = True,
                          overwrite: bool = False, on_image: OnImage = None) -> dict[str, Any]:
    """<out_dir>/<id>.png AffinityNet labels from <cam_dir>/<id>.npy for (id, image path)."""
    from training.evaluation.evaluate import load_cams

    out_dir.mkdir(parents=True, exist_ok=True)
    todo = _todo(items, out_dir, ".png", overwrite)
    counts = np.zeros(3, np.int64)  # bg, fg, unknown pixels of the images written now
    for image_id, path in todo:
        cam_file = cam_dir / f"{image_id}.npy"
        if not cam_file.is_file():
            raise FileNotFoundError(f"no CAM file {cam_file}")
        classes, cams = load_cams(cam_file)
        rgb = load_rgb(path)
        if classes and cams.shape[1:] != rgb.shape[:2]:
            raise ValueError(f"{cam_file}: CAM size {cams.shape[1:]} differs from the image {rgb.shape[:2]}")
        lab = affinity_label_map(rgb, cams, classes, la_alpha, ha_alpha, crf=crf)
        counts += [(lab == 0).sum(), ((lab > 0) & (lab < 255)).sum(), (lab == 255).sum()]
        _save_png(lab, out_dir / f"{image_id}.png")
        if on_image is not None:
            on_image(image_id)
    total = max(int(counts.sum()), 1)
    return {"written": len(todo), "skipped": len(items) - len(todo),
            "share": {"background": counts[0] / total, "foreground": counts[1] / total, "unknown": counts[2] / total}
            if todo else None}


@dataclass(frozen=True)
class RandomWalkConfig:
    alpha: float = DEFAULT_ALPHA
    beta: float = DEFAULT_BETA
    logt: int = DEFAULT_LOGT
    radius: int = DEFAULT_RADIUS
    dense: bool = False  # the authors' dense T^(2^logt) (slow; for comparison)


def random_walk_dir(model: Any, items: Sequence[tuple[str, Path]], cam_dir: Path, out_dir: Path,
                    cfg: RandomWalkConfig = RandomWalkConfig(), device: str = "cpu", overwrite: bool = False,
                    on_image: OnImage = None) -> dict[str, Any]:
    """<out_dir>/<id>.png random-walk pseudo labels: AffinityNet features (torch) + the shared
    numpy random walk of <cam_dir>/<id>.npy."""
    from training.evaluation.evaluate import load_cams
    from training.inference.segment import affinity_features

    out_dir.mkdir(parents=True, exist_ok=True)
    todo = _todo(items, out_dir, ".png", overwrite)
    t_walk = 0.0
    for image_id, path in todo:
        cam_file = cam_dir / f"{image_id}.npy"
        if not cam_file.is_file():
            raise FileNotFoundError(f"no CAM file {cam_file}")
        classes, cams = load_cams(cam_file)
        rgb = load_rgb(path)
        H, W = rgb.shape[:2]
        if not classes:
            cams = np.zeros((0, H, W), np.float32)
        feat = affinity_features(model, rgb, device)
        t0 = time.perf_counter()
        lab = random_walk_labels(feat, cams, classes, (H, W), cfg.alpha, cfg.beta, cfg.logt, cfg.radius,
                                 dense=cfg.dense)
        t_walk += time.perf_counter() - t0
        _save_png(lab, out_dir / f"{image_id}.png")
        if on_image is not None:
            on_image(image_id)
    return {"written": len(todo), "skipped": len(items) - len(todo),
            "walk_ms_per_image": round(1000 * t_walk / len(todo), 2) if todo else None}


def segment_dir(model: Any, items: Sequence[tuple[str, Path]], out_dir: Path, scales: Sequence[float],
                flip: bool = True, crf: bool = False, device: str = "cpu", overwrite: bool = False,
                on_image: OnImage = None) -> dict[str, Any]:
    """<out_dir>/<id>.png DeepLab predictions."""
    from training.inference.segment import segment_label

    out_dir.mkdir(parents=True, exist_ok=True)
    todo = _todo(items, out_dir, ".png", overwrite)
    for image_id, path in todo:
        _save_png(segment_label(model, load_rgb(path), scales, flip, crf, device), out_dir / f"{image_id}.png")
        if on_image is not None:
            on_image(image_id)
    return {"written": len(todo), "skipped": len(items) - len(todo)}


def write_classes(out_dir: Path, class_names: Sequence[str]) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "classes.txt").write_text("".join(f"{c}\n" for c in class_names))


# --------------------------------------------------------------------------- the pipeline

@dataclass
class PipelineConfig:
    data: str
    out: str
    dataset: str = "auto"
    train_list: str | None = None
    labels: str | None = None  # image-level labels (data set default when None)
    eval_list: str | None = None  # DeepLab evaluation list; None: the set's val.txt when present
    weights: str | None = None  # ImageNet init for SEAM (and AffinityNet / DeepLab); None = random init
    backbone: str = "resnet38"
    batch_size: int = 8
    crop: int = 448
    seam_epochs: int = 8
    seam_lr: float = 0.01
    cam_scales: tuple[float, ...] = DEFAULT_SCALES
    la_alpha: float = LA_ALPHA
    ha_alpha: float = HA_ALPHA
    crf: bool = True  # dense CRF for the AffinityNet labels (needs pydensecrf2)
    aff_epochs: int = 8
    aff_lr: float = 0.01  # see AffinityTrainConfig
    rw: RandomWalkConfig = field(default_factory=RandomWalkConfig)
    deeplab_epochs: int = 20
    deeplab_lr: float = 1e-3
    seg_scales: tuple[float, ...] = (0.5, 0.75, 1.0, 1.25, 1.5, 1.75)  # = inference.segment.DEFAULT_SEG_SCALES
    seg_crf: bool = False  # the authors' test protocol has it on (1 iteration); off here: pydensecrf2 is optional
    recipe: str | None = None  # release | tuned for every training stage; None: release (DeepLab off VOC: tuned)
    seed: int = 0
    device: str | None = None
    workers: int | None = None
    amp: bool | None = None

    def to_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(asdict(self)))


@dataclass
class StageHooks:
    """How the pipeline reports: a log line sink, and per-stage progress callbacks."""

    log: Log = print
    train_progress: Callable[[str], Callable[[Any], None] | None] = lambda _name: None
    image_progress: Callable[[str, int], OnImage] = lambda _name, _n: None


def _final_done(path: Path) -> bool:
    side = path.with_suffix(".json")
    if not path.is_file() or not side.is_file():
        return False
    try:
        return bool(json.loads(side.read_text()).get("training", {}).get("completed", False))
    except json.JSONDecodeError:
        return False


def _val_list(cfg: PipelineConfig) -> Path | None:
    if cfg.eval_list:
        return Path(cfg.eval_list)
    p = Path(cfg.data) / "ImageSets" / "Segmentation" / "val.txt"
    return p if p.is_file() else None


_DEFAULT_HOOKS = StageHooks()


def run_pipeline(cfg: PipelineConfig, hooks: StageHooks = _DEFAULT_HOOKS) -> dict[str, Any]:
    """Run (or resume) every stage; returns and writes RUN_DIR/results.json."""
    from seam.common.files import list_images
    from training.data.datasets import build_dataset
    from training.engine.affinity import AFFINITY_FINAL, AffinityTrainConfig, train_affinity
    from training.engine.cam_eval import write_cams
    from training.engine.deeplab import DEEPLAB_FINAL, DeepLabTrainConfig, train_deeplab
    from training.engine.recipes import default_recipe
    from training.engine.state import FINAL_NAME
    from training.engine.trainer import TrainConfig, train
    from training.evaluation.evaluate import evaluate
    from training.inference.cam import default_device
    from training.models.registry import model_from_checkpoint

    log = hooks.log
    run = Path(cfg.out)
    run.mkdir(parents=True, exist_ok=True)
    device = default_device(cfg.device)
    results_path = run / "results.json"
    results: dict[str, Any] = {"config": cfg.to_dict(), "stages": {}, "miou": {}}
    if results_path.is_file():
        try:
            old = json.loads(results_path.read_text())
            results["stages"] = old.get("stages", {})
            results["miou"] = old.get("miou", {})
        except json.JSONDecodeError:
            pass

    def save() -> None:
        tmp = results_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(results, indent=2, default=str) + "\n")
        tmp.replace(results_path)

    def stage(name: str, fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        t0 = time.time()
        out = fn()
        if out.pop("skipped_stage", False):  # outputs from an earlier run: keep its record
            out = {**results["stages"].get(name, {}), "reused": True}
        else:
            out["seconds"] = round(time.time() - t0, 1)
        results["stages"][name] = out
        save()
        return out

    ds = build_dataset(cfg.dataset, cfg.data, cfg.train_list, cfg.labels)
    recipe = cfg.recipe or default_recipe(ds.kind)
    dl_recipe = cfg.recipe or default_recipe(ds.kind, "deeplab")
    results["recipe"] = {"seam": recipe, "affinity": recipe, "deeplab": dl_recipe}
    class_names = list(ds.class_names)
    train_items = list(zip(ds.ids, ds.paths, strict=True))
    val_list = _val_list(cfg)
    val_items = list_images(val_list, ds.image_root) if val_list else []
    gt = ds.gt_dir
    log(f"pipeline on {len(train_items)} training images ({len(class_names) - 1} classes), "
        f"{len(val_items)} evaluation images, backbone {cfg.backbone}, device {device}, run dir {run}, "
        f"recipe {recipe}{'' if dl_recipe == recipe else ' (DeepLab ' + dl_recipe + ')'}"
        f"{'' if cfg.recipe else ' (default for ' + ds.kind + ' data)'}")

    def miou(key: str, pred_dir: Path, ids: list[str], **kw: Any) -> None:
        if gt is None or not ids:
            return
        ids = [i for i in ids if (gt / f"{i}.png").is_file()]
        if not ids:
            return
        r = evaluate(pred_dir, gt, ids, class_names=class_names, progress=False, **kw)
        entry = {"miou": r["miou"], "mfn": r["mfn"], "mfp": r["mfp"], "num_images": r["num_images"],
                 "per_class": r["per_class"]}
        if "best_threshold" in r:
            entry["best_threshold"] = r["best_threshold"]
        results["miou"][key] = entry
        save()
        log(f"  mIoU {key}: {r['miou']:.2f}%" + (f" (background threshold {r['best_threshold']:.2f})"
                                                  if "best_threshold" in r else ""))

    # 1. SEAM
    seam_dir = run / "seam"
    seam_final = seam_dir / FINAL_NAME

    def train_stage(step: str, title: str, final: Path, start: str, trainer: Callable[..., dict[str, Any]],
                    config: Callable[..., Any], **settings: Any) -> dict[str, Any]:
        """A training stage: skipped when `final` is complete, else resumed or started in its directory."""
        if _final_done(final):
            log(f"[{step}] {title}: {final} exists, skipped")
            return {"skipped_stage": True}
        log(f"[{step}] {start}")
        out_dir = final.parent
        tcfg = config(backbone=cfg.backbone, batch_size=cfg.batch_size, crop=cfg.crop, out=str(out_dir), seed=cfg.seed,
                      device=cfg.device, workers=cfg.workers, amp=cfg.amp,
                      resume=(out_dir / "checkpoint.pth").is_file(), **settings)
        side = trainer(tcfg, on_progress=hooks.train_progress(title), log=log)
        return {"weights": str(final), "training": side.get("training", {}), "final": side["metrics"]["final"]}

    stage("seam", lambda: train_stage(
        "1/6", "SEAM", seam_final, "SEAM training", train, partial(TrainConfig.from_recipe, recipe), data=cfg.data,
        dataset=cfg.dataset,
        train_list=cfg.train_list, labels=cfg.labels, weights=cfg.weights, epochs=cfg.seam_epochs, lr=cfg.seam_lr,
        evaluate=False))

    # 2. CAMs of the training images (known image labels, as the authors' infer_SEAM)
    cam_dir = run / "cams"

    def do_cams() -> dict[str, Any]:
        cam_dir.mkdir(parents=True, exist_ok=True)
        todo = [(i, p, ds.label_indices(i)) for i, p in train_items if not (cam_dir / f"{i}.npy").is_file()]
        if not todo:
            log("[2/6] CAMs: all present, skipped")
            return {"skipped_stage": True}
        log(f"[2/6] CAMs of {len(todo)} training images (scales {list(cfg.cam_scales)}, flip)")
        model, _ = model_from_checkpoint(seam_final, "seam")
        write_cams(model, todo, cam_dir, cfg.cam_scales, refined=True, device=device,
                   on_image=hooks.image_progress("CAMs", len(todo)))
        return {"written": len(todo), "scales": list(cfg.cam_scales)}

    stage("cams", do_cams)
    miou("cam_train", cam_dir, ds.ids, kind="npy", curve=True)
    if gt is not None and results["miou"].get("cam_train"):
        miou("cam_train_default_threshold", cam_dir, ds.ids, kind="npy", threshold=DEFAULT_BG_THRESHOLD)

    # 3. AffinityNet labels
    aff_lab_dir = run / "aff_labels"

    def do_aff_labels() -> dict[str, Any]:
        todo = _todo(train_items, aff_lab_dir, ".png", False)
        if not todo:
            log("[3/6] AffinityNet labels: all present, skipped")
            return {"skipped_stage": True}
        log(f"[3/6] AffinityNet labels (la {cfg.la_alpha:g}, ha {cfg.ha_alpha:g}, "
            f"{'dense CRF' if cfg.crf else 'no CRF'}) for {len(todo)} images")
        return write_affinity_labels(train_items, cam_dir, aff_lab_dir, cfg.la_alpha, cfg.ha_alpha, cfg.crf,
                                     on_image=hooks.image_progress("aff labels", len(todo)))

    stage("aff_labels", do_aff_labels)

    # 4. AffinityNet
    aff_dir = run / "affinity"
    aff_final = aff_dir / AFFINITY_FINAL
    init = cfg.weights or str(seam_final)

    stage("affinity", lambda: train_stage(
        "4/6", "AffinityNet", aff_final, f"AffinityNet training (init {init})", train_affinity,
        partial(AffinityTrainConfig.from_recipe, recipe),
        data=cfg.data, labels=str(aff_lab_dir), dataset=cfg.dataset, train_list=cfg.train_list,
        image_labels=cfg.labels, weights=init, epochs=cfg.aff_epochs, lr=cfg.aff_lr, radius=cfg.rw.radius))

    # 5. random walk
    rw_dir = run / "rw"

    def do_rw() -> dict[str, Any]:
        todo = _todo(train_items, rw_dir, ".png", False)
        if not todo:
            log("[5/6] random walk: all present, skipped")
            return {"skipped_stage": True}
        log(f"[5/6] random walk (alpha {cfg.rw.alpha:g}, beta {cfg.rw.beta:g}, logt {cfg.rw.logt}, "
            f"radius {cfg.rw.radius}, {'dense' if cfg.rw.dense else 'sparse'}) for {len(todo)} images")
        model, _ = model_from_checkpoint(aff_final, "affinity")
        write_classes(rw_dir, class_names)
        out = random_walk_dir(model, train_items, cam_dir, rw_dir, cfg.rw, device,
                              on_image=hooks.image_progress("random walk", len(todo)))
        return {**out, **asdict(cfg.rw)}

    stage("rw", do_rw)
    miou("rw_train", rw_dir, ds.ids, kind="png")

    # 6. DeepLab on the random-walk labels, then segment train + eval images
    dl_dir = run / "deeplab"
    dl_final = dl_dir / DEEPLAB_FINAL

    # every image of the data root with a random-walk label, i.e. the training list
    stage("deeplab", lambda: train_stage(
        "6/6", "DeepLab", dl_final, f"DeepLab training on the random-walk labels (init {init})", train_deeplab,
        partial(DeepLabTrainConfig.from_recipe, dl_recipe), images=str(ds.image_root), labels=str(rw_dir),
        classes=",".join(class_names),
        weights=init, epochs=cfg.deeplab_epochs, lr=cfg.deeplab_lr))
    seg_dir = run / "segment"

    def do_segment() -> dict[str, Any]:
        items = list(dict.fromkeys(val_items + train_items))
        todo = _todo(items, seg_dir, ".png", False)
        if not todo:
            log("DeepLab predictions: all present, skipped")
            return {"skipped_stage": True}
        log(f"DeepLab predictions for {len(todo)} images (scales {list(cfg.seg_scales)}, flip"
            f"{', CRF' if cfg.seg_crf else ''})")
        model, _ = model_from_checkpoint(dl_final, "deeplab")
        return segment_dir(model, items, seg_dir, cfg.seg_scales, True, cfg.seg_crf, device,
                           on_image=hooks.image_progress("segment", len(todo)))

    stage("segment", do_segment)
    miou("deeplab_train", seg_dir, ds.ids, kind="png")
    miou("deeplab_val", seg_dir, [i for i, _ in val_items], kind="png")
    results["table"] = miou_table(results["miou"])
    save()
    return results


def miou_table(m: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for key, stage, split in (("cam_train", "SEAM CAM (best threshold)", "train"),
                              ("cam_train_default_threshold", f"SEAM CAM (threshold {DEFAULT_BG_THRESHOLD})", "train"),
                              ("rw_train", "+ AffinityNet random walk", "train"),
                              ("deeplab_train", "DeepLab on RW labels", "train"),
                              ("deeplab_val", "DeepLab on RW labels", "val")):
        if key in m:
            rows.append({"stage": stage, "split": split, "miou": round(m[key]["miou"], 2)})
    return rows
