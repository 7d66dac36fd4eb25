"""The whole SEAM pipeline in one call: SEAM -> CAMs -> AffinityNet labels -> AffinityNet
-> random walk -> DeepLab (the per-image stages are the label-directory writers of
`seam.training.label_dirs`, which the CLI commands use too).

Run directory (every stage skipped when its outputs exist, trainers resumed from their
checkpoint.pth when interrupted):

    seam/        seam_final.pth + .json           (seam.training.trainers.seam)
    cams/        <id>.npy  {fg class: HxW}        training images, known image labels
    aff_labels/  <id>.npz  la / ha CRF posteriors, <id>.png their labels 0 / c+1 / 255
                                                  (seam.common.affinity_labels)
    affinity/    affinity_final.pth + .json
    rw/          <id>.png  random-walk pseudo labels (+ classes.txt)
    deeplab/     deeplab_final.pth + .json
    segment/     <id>.png  DeepLab predictions (training and evaluation images)
    results.json every stage's settings, timings and mIoU

mIoU (when SegmentationClass/ exists): CAM and random-walk pseudo labels on the
training images (the paper's "train" numbers), DeepLab on the evaluation list (val)
and on the training images.

`run_pipeline` walks the table `PipelineRun.stages()`: one method a stage, built on two
shapes, `trained` (a trainer, skipped when its final weights are complete) and
`per_image` (skipped when every image's output exists), each followed by its mIoU.
"""
from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from seam.training.data.datasets import DATASET_HELP, build_dataset, dataset_choices, default_recipe
from seam.training.label_dirs import (
    RandomWalkConfig,
    missing_outputs,
    random_walk_dir,
    segment_dir,
    write_affinity_labels,
    write_classes,
)

from seam.common.affinity_labels import HA_ALPHA, LA_ALPHA
from seam.common.cam import DEFAULT_BG_THRESHOLD, DEFAULT_SCALES
from seam.common.options import parse_floats, setting

OnImage = Callable[[str], None] | None
Log = Callable[[str], None]


# --------------------------------------------------------------------------- the pipeline

@dataclass
class PipelineConfig:
    data: str = setting(path=True, help="Data root: VOC (JPEGImages/), a synth set, or an image folder.")
    out: str = setting(path=True, help="Run directory (one sub-directory per stage, results.json).")
    dataset: str = setting("auto", choices=dataset_choices, help=DATASET_HELP)
    train_list: str | None = setting(None, path=True, help="Training image list (default: the data set's).")
    labels: str | None = setting(None, path=True, help="Image-level labels (default: the data set's).")
    eval_list: str | None = setting(None, path=True, help=(
        "DeepLab evaluation list (default ImageSets/Segmentation/val.txt, when present)."))
    weights: str | None = setting(None, path=True, help=(
        "ImageNet weights for SEAM (and AffinityNet / DeepLab, else they start from SEAM)."))  # None = random init
    backbone: str = setting("resnet38", help="resnet38 (the paper) or resnet38_small (CPU).")
    # training settings: None = the stage's recipe value (SEAM / AffinityNet batch 8, 8 epochs, lr 0.01;
    # DeepLab batch 10, 20000 iterations, lr 1e-3 under release); a value = an override of every stage
    # (batch_size, crop) or of one (the epochs, the lrs), recorded as such in the sidecars
    batch_size: int | None = setting(None, recipe=True, help=(
        "Global batch size of every training stage (recipe: SEAM / AffinityNet 8; DeepLab release 10, tuned 8)."))
    crop: int | None = setting(None, recipe=True, help=(
        "Training crop of every stage, a multiple of 8 (recipe: 448)."))
    seam_epochs: int | None = setting(None, recipe=True, help="SEAM epochs (recipe: 8).")
    seam_lr: float | None = setting(None, recipe=True, help="SEAM base learning rate (recipe: 0.01).")
    cam_scales: tuple[float, ...] = setting(DEFAULT_SCALES, parse=parse_floats, help="CAM inference scales.")
    la_alpha: float = setting(LA_ALPHA, help="AffinityNet labels: confident-foreground power (la).")
    ha_alpha: float = setting(HA_ALPHA, help="AffinityNet labels: confident-background power (ha).")
    crf: bool = setting(True, flag=None, off="--no-crf", help=(
        "AffinityNet labels without the dense CRF."))  # the CRF needs pydensecrf2
    aff_epochs: int | None = setting(None, recipe=True, help="AffinityNet epochs (recipe: 8).")
    aff_lr: float | None = setting(None, recipe=True, help="AffinityNet base learning rate (recipe: 0.01).")
    rw: RandomWalkConfig = field(default_factory=RandomWalkConfig)  # its fields are options of their own
    deeplab_epochs: int | None = setting(None, recipe=True, help=(
        "DeepLab epochs, instead of the recipe's length (recipe: release 20000 iterations, tuned 20 epochs)."))
    deeplab_lr: float | None = setting(None, recipe=True, help="DeepLab base learning rate (recipe: 1e-3).")
    seg_scales: tuple[float, ...] = setting(  # = inference.segment.DEFAULT_SEG_SCALES
        (0.5, 0.75, 1.0, 1.25, 1.5, 1.75), parse=parse_floats, help="DeepLab test scales (the authors' test protocol).")
    seg_crf: bool = setting(True, help=(
        "Dense CRF on the DeepLab predictions: the authors' test protocol (1 iteration, bilateral sxy 32)."))
    recipe: str | None = setting(None, recipe=True, help=(
        "Training recipe of every stage: release (the published runs: SEAM and AffinityNet batch 8, 8 epochs; "
        "DeepLab batch 10, 20000 iterations, BN statistics per 5 images; fp32) or tuned. Default: release, except "
        "DeepLab off VOC data (tuned). Options given override it."))
    seed: int = setting(0, help="Random seed.")
    device: str | None = setting(None, help="torch device (default: cuda if available).")
    workers: int | None = setting(None, help="Data loader workers.")
    amp: bool | None = setting(None, recipe=True, help=(
        "Mixed precision (recipe: release off, tuned on with CUDA)."))  # None: each stage's recipe decides

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
_REUSED = "skipped_stage"  # a stage answers {_REUSED: True} when its outputs are there from an earlier run


class PipelineRun:
    """One run directory: the data set, where each stage writes, and results.json (rewritten
    after every stage and every mIoU, so an interrupted run keeps what it measured)."""

    def __init__(self, cfg: PipelineConfig, hooks: StageHooks) -> None:
        from seam.training.inference.cam import default_device
        from seam.training.trainers.affinity import AFFINITY_FINAL
        from seam.training.trainers.deeplab import DEEPLAB_FINAL
        from seam.training.trainers.state import SEAM_FINAL

        self.cfg, self.hooks, self.log = cfg, hooks, hooks.log
        self.dir = Path(cfg.out)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.device = default_device(cfg.device)
        self.results: dict[str, Any] = {"config": cfg.to_dict(), "stages": {}, "miou": {}, **self._earlier()}
        self.ds = build_dataset(cfg.dataset, cfg.data, cfg.train_list, cfg.labels)
        self.recipe = cfg.recipe or default_recipe(self.ds.kind)
        self.deeplab_recipe = cfg.recipe or default_recipe(self.ds.kind, "deeplab")
        self.results["recipe"] = {"seam": self.recipe, "affinity": self.recipe, "deeplab": self.deeplab_recipe}
        self.class_names = list(self.ds.class_names)
        self.train_items = list(zip(self.ds.ids, self.ds.paths, strict=True))
        val_list = _val_list(cfg)
        self.val_items = self._list_images(val_list) if val_list else []
        self.seam_final = self.dir / "seam" / SEAM_FINAL
        self.cam_dir = self.dir / "cams"
        self.aff_label_dir = self.dir / "aff_labels"
        self.aff_final = self.dir / "affinity" / AFFINITY_FINAL
        self.rw_dir = self.dir / "rw"
        self.deeplab_final = self.dir / "deeplab" / DEEPLAB_FINAL
        self.seg_dir = self.dir / "segment"
        self.init = cfg.weights or str(self.seam_final)  # AffinityNet and DeepLab start from SEAM without --weights
        self.finals = {"seam": self.seam_final, "affinity": self.aff_final, "deeplab": self.deeplab_final}
        self._configs: dict[str, Any] = {}

    def _earlier(self) -> dict[str, Any]:
        """The stages and mIoU an earlier run recorded in results.json."""
        path = self.dir / "results.json"
        if not path.is_file():
            return {}
        try:
            old = json.loads(path.read_text())
        except json.JSONDecodeError:
            return {}
        return {"stages": old.get("stages", {}), "miou": old.get("miou", {})}

    def _list_images(self, list_file: Path) -> list[tuple[str, Path]]:
        from seam.common.files import list_images

        return list_images(list_file, self.ds.image_root)

    def describe(self) -> str:
        """The run's opening log line: data, backbone, device, recipes."""
        cfg, recipe, dl_recipe = self.cfg, self.recipe, self.deeplab_recipe
        return (f"pipeline on {len(self.train_items)} training images ({len(self.class_names) - 1} classes), "
                f"{len(self.val_items)} evaluation images, backbone {cfg.backbone}, device {self.device}, "
                f"run dir {self.dir}, recipe {recipe}{'' if dl_recipe == recipe else ' (DeepLab ' + dl_recipe + ')'}"
                f"{'' if cfg.recipe else ' (default for ' + self.ds.kind + ' data)'}")

    def save(self) -> None:
        path = self.dir / "results.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.results, indent=2, default=str) + "\n")
        tmp.replace(path)  # never a half-written results.json

    def record(self, name: str, stage: Callable[[], dict[str, Any]]) -> None:
        """Run `stage` and keep its answer (with its time) in results.json; a stage whose outputs
        were all there keeps the earlier run's record, marked reused."""
        t0 = time.time()
        out = stage()
        if out.pop(_REUSED, False):
            out = {**self.results["stages"].get(name, {}), "reused": True}
        else:
            out["seconds"] = round(time.time() - t0, 1)
        self.results["stages"][name] = out
        self.save()

    def miou(self, key: str, pred_dir: Path, ids: Sequence[str], **kw: Any) -> None:
        """Score <pred_dir> against SegmentationClass/ on the `ids` that have ground truth."""
        from seam.training.evaluation.evaluate import evaluate

        gt = self.ds.gt_dir
        ids = [i for i in ids if (gt / f"{i}.png").is_file()] if gt is not None else []
        if not ids:
            return
        r = evaluate(pred_dir, gt, ids, class_names=self.class_names, progress=False, **kw)
        entry = {k: r[k] for k in ("miou", "mfn", "mfp", "num_images", "per_class")}
        if "best_threshold" in r:
            entry["best_threshold"] = r["best_threshold"]
        self.results["miou"][key] = entry
        self.save()
        self.log(f"  mIoU {key}: {r['miou']:.2f}%" + (f" (background threshold {r['best_threshold']:.2f})"
                                                       if "best_threshold" in r else ""))

    # ----------------------------------------------------------------------- shared stage shapes

    def stage_config(self, name: str) -> Any:
        """The training config of stage `name` (seam | affinity | deeplab): its recipe's values,
        then the pipeline's given settings (None = not given). Built once, before any stage runs."""
        if name not in self._configs:
            self._configs[name] = self._build_config(name)
        return self._configs[name]

    def _build_config(self, name: str) -> Any:
        from seam.training.trainers.affinity import AffinityTrainConfig
        from seam.training.trainers.deeplab import DeepLabTrainConfig
        from seam.training.trainers.seam import TrainConfig

        cfg, final = self.cfg, self.finals[name]
        common = {"backbone": cfg.backbone, "batch_size": cfg.batch_size, "crop": cfg.crop, "out": str(final.parent),
                  "seed": cfg.seed, "device": cfg.device, "workers": cfg.workers, "amp": cfg.amp,
                  "resume": (final.parent / "checkpoint.pth").is_file()}
        if name == "seam":
            return TrainConfig.from_recipe(self.recipe, data=cfg.data, dataset=cfg.dataset, train_list=cfg.train_list,
                                           labels=cfg.labels, weights=cfg.weights, epochs=cfg.seam_epochs,
                                           lr=cfg.seam_lr, evaluate=False, **common)
        if name == "affinity":
            return AffinityTrainConfig.from_recipe(self.recipe, data=cfg.data, labels=str(self.aff_label_dir),
                                                   dataset=cfg.dataset, train_list=cfg.train_list,
                                                   image_labels=cfg.labels, weights=self.init, epochs=cfg.aff_epochs,
                                                   lr=cfg.aff_lr, radius=cfg.rw.radius, **common)
        return DeepLabTrainConfig.from_recipe(self.deeplab_recipe, images=str(self.ds.image_root),
                                              labels=str(self.rw_dir), classes=",".join(self.class_names),
                                              weights=self.init, epochs=cfg.deeplab_epochs, lr=cfg.deeplab_lr,
                                              **common)

    def plan(self) -> dict[str, Any]:
        """Every training stage's recipe report (values and the settings given over them), logged
        before anything runs and kept in results.json."""
        from seam.training.trainers.recipes import describe

        out = {}
        for name, title in (("seam", "SEAM"), ("affinity", "AffinityNet"), ("deeplab", "DeepLab")):
            tcfg = self.stage_config(name)
            out[name] = tcfg.recipe_report()
            self.log(f"  {title}: {describe(tcfg)}")
            if name == "deeplab" and tcfg.max_iterations is None and out[name]["settings"].get("max_iterations"):
                self.log(f"  DeepLab: {tcfg.epochs} epochs as given, instead of the recipe's "
                         f"{out[name]['settings']['max_iterations']} iterations")
        self.log(f"  DeepLab test: scales {list(self.cfg.seg_scales)}, flip, "
                 + ("dense CRF (1 iteration, bilateral sxy 32), as the authors' test" if self.cfg.seg_crf
                    else "no CRF (the authors' test has it)"))
        return out

    def trained(self, step: str, title: str, name: str, start: str,
                trainer: Callable[..., dict[str, Any]]) -> dict[str, Any]:
        """A training stage: skipped when its final weights are complete, else resumed or started."""
        tcfg, final = self.stage_config(name), self.finals[name]
        if _final_done(final):
            self.log(f"[{step}] {title}: {final} exists, skipped")
            return {_REUSED: True}
        self.log(f"[{step}] {start}")
        side = trainer(tcfg, on_progress=self.hooks.train_progress(title), log=self.log)
        return {"weights": str(final), "training": side.get("training", {}), "final": side["metrics"]["final"],
                "recipe": side.get("recipe")}

    def per_image(self, title: str, items: Sequence[tuple[str, Path]], out_dir: Path, suffix: str,
                  write: Callable[[int], dict[str, Any]]) -> dict[str, Any]:
        """A per-image stage: skipped when every item has <out_dir>/<id><suffix>, else
        `write(number of missing outputs)`."""
        missing = len(missing_outputs(items, out_dir, suffix))
        if not missing:
            self.log(f"{title}: all present, skipped")
            return {_REUSED: True}
        return write(missing)

    # ----------------------------------------------------------------------- the stages

    def seam(self) -> dict[str, Any]:
        from seam.training.trainers.seam import train

        return self.trained("1/6", "SEAM", "seam", "SEAM training", train)

    def cams(self) -> dict[str, Any]:
        """CAMs of the training images, given their image labels (as the authors' infer_SEAM)."""
        self.cam_dir.mkdir(parents=True, exist_ok=True)
        return self.per_image("[2/6] CAMs", self.train_items, self.cam_dir, ".npy", self._write_cams)

    def _write_cams(self, n: int) -> dict[str, Any]:
        from seam.training.models.registry import model_from_checkpoint
        from seam.training.trainers.cam_eval import write_cams

        scales = self.cfg.cam_scales
        self.log(f"[2/6] CAMs of {n} training images (scales {list(scales)}, flip)")
        todo = [(i, p, self.ds.label_indices(i)) for i, p in missing_outputs(self.train_items, self.cam_dir, ".npy")]
        model, _ = model_from_checkpoint(self.seam_final, "seam")
        write_cams(model, todo, self.cam_dir, scales, refined=True, device=self.device,
                   on_image=self.hooks.image_progress("CAMs", n))
        return {"written": n, "scales": list(scales)}

    def score_cams(self) -> None:
        self.miou("cam_train", self.cam_dir, self.ds.ids, kind="npy", curve=True)
        if self.ds.gt_dir is not None and self.results["miou"].get("cam_train"):
            self.miou("cam_train_default_threshold", self.cam_dir, self.ds.ids, kind="npy",
                      threshold=DEFAULT_BG_THRESHOLD)

    def aff_labels(self) -> dict[str, Any]:
        cfg = self.cfg

        def write(n: int) -> dict[str, Any]:
            self.log(f"[3/6] AffinityNet labels (la {cfg.la_alpha:g}, ha {cfg.ha_alpha:g}, "
                     f"{'dense CRF' if cfg.crf else 'no CRF'}) for {n} images")
            return write_affinity_labels(self.train_items, self.cam_dir, self.aff_label_dir, cfg.la_alpha,
                                         cfg.ha_alpha, cfg.crf, on_image=self.hooks.image_progress("aff labels", n))

        return self.per_image("[3/6] AffinityNet labels", self.train_items, self.aff_label_dir, ".png", write)

    def affinity(self) -> dict[str, Any]:
        from seam.training.trainers.affinity import train_affinity

        return self.trained("4/6", "AffinityNet", "affinity", f"AffinityNet training (init {self.init})",
                            train_affinity)

    def random_walk(self) -> dict[str, Any]:
        rw = self.cfg.rw

        def write(n: int) -> dict[str, Any]:
            from seam.training.models.registry import model_from_checkpoint

            self.log(f"[5/6] random walk (alpha {rw.alpha:g}, beta {rw.beta:g}, logt {rw.logt}, "
                     f"radius {rw.radius}, {'dense' if rw.dense else 'sparse'}) for {n} images")
            model, _ = model_from_checkpoint(self.aff_final, "affinity")
            write_classes(self.rw_dir, self.class_names)
            out = random_walk_dir(model, self.train_items, self.cam_dir, self.rw_dir, rw, self.device,
                                  on_image=self.hooks.image_progress("random walk", n))
            return {**out, **asdict(rw)}

        return self.per_image("[5/6] random walk", self.train_items, self.rw_dir, ".png", write)

    def deeplab(self) -> dict[str, Any]:
        """DeepLab on the random-walk labels: every image of the data root that has one (the training list)."""
        from seam.training.trainers.deeplab import train_deeplab

        return self.trained("6/6", "DeepLab", "deeplab",
                            f"DeepLab training on the random-walk labels (init {self.init})", train_deeplab)

    def segment(self) -> dict[str, Any]:
        """DeepLab predictions for the evaluation and the training images."""
        cfg = self.cfg
        items = list(dict.fromkeys(self.val_items + self.train_items))

        def write(n: int) -> dict[str, Any]:
            from seam.training.models.registry import model_from_checkpoint

            self.log(f"DeepLab predictions for {n} images (scales {list(cfg.seg_scales)}, flip"
                     f"{', CRF' if cfg.seg_crf else ''})")
            model, _ = model_from_checkpoint(self.deeplab_final, "deeplab")
            return segment_dir(model, items, self.seg_dir, cfg.seg_scales, True, cfg.seg_crf, self.device,
                               on_image=self.hooks.image_progress("segment", n))

        return self.per_image("DeepLab predictions", items, self.seg_dir, ".png", write)

    def stages(self) -> list[tuple[str, Callable[[], dict[str, Any]], tuple[Callable[[], None], ...]]]:
        """(results.json name, the stage, the mIoU scored after it), in pipeline order."""
        ids, val_ids = self.ds.ids, [i for i, _ in self.val_items]
        return [
            ("seam", self.seam, ()),
            ("cams", self.cams, (self.score_cams,)),
            ("aff_labels", self.aff_labels, ()),
            ("affinity", self.affinity, ()),
            ("rw", self.random_walk, (partial(self.miou, "rw_train", self.rw_dir, ids, kind="png"),)),
            ("deeplab", self.deeplab, ()),
            ("segment", self.segment, (partial(self.miou, "deeplab_train", self.seg_dir, ids, kind="png"),
                                       partial(self.miou, "deeplab_val", self.seg_dir, val_ids, kind="png"))),
        ]


def run_pipeline(cfg: PipelineConfig, hooks: StageHooks = _DEFAULT_HOOKS) -> dict[str, Any]:
    """Run (or resume) every stage; returns and writes RUN_DIR/results.json."""
    run = PipelineRun(cfg, hooks)
    run.log(run.describe())
    run.results["plan"] = run.plan()
    for name, stage, scores in run.stages():
        run.record(name, stage)
        for score in scores:
            score()
    run.results["table"] = miou_table(run.results["miou"])
    run.save()
    return run.results


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
