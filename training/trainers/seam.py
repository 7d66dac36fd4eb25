"""SEAM training (the authors' train_SEAM.py), single process or DDP under torchrun.

One step: img2 = A(img1) (scale 0.3 by default); (cam1, rv1) = net(img1),
(cam2, rv2) = net(img2); loss = cls + ER + ECR (seam.training.losses.seam_losses).
BN frozen, conv1a/b2* frozen, four parameter groups with poly decay, SGD.

Run directory: checkpoint.pth (each epoch, and when stopped early; exact --resume),
seam_final.pth (bare state dict, the authors' format) + seam_final.json (sidecar:
config, class names, backbone, dataset fingerprint, metrics), log.csv, and
TensorBoard events when tensorboard is importable.
"""
from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from seam.training.data.augment import RELEASE_JITTER, AugmentConfig, AugmentedDataset
from seam.training.data.datasets import (
    DATASET_HELP,
    DatasetError,
    ImageLabelSet,
    build_dataset,
    dataset_choices,
    eval_items,
)
from seam.training.losses import LossSwitches, seam_losses
from seam.training.models.registry import create_model
from seam.training.trainers.batchnorm import freeze_parameters
from seam.training.trainers.config import RunConfig
from seam.training.trainers.distributed import Dist
from seam.training.trainers.recipes import RECIPE_HELP
from seam.training.trainers.run import Progress, Run
from seam.training.trainers.schedule import AUTHORS_MOMENTUM
from seam.training.trainers.siamese import SiameseConfig, parse_transforms, sample_transform
from seam.training.trainers.state import (
    SEAM_FINAL,
    initialise_from,
    summarise_keys,
    write_sidecar,
)
from seam.training.trainers.template import Log, OnProgress, Parts, Step, Trainer
from torch import nn

from seam.common.cam import DEFAULT_SCALES
from seam.common.options import parse_floats, parse_int_pair, parse_n_floats, setting

LOSS_TERMS = ("loss", "cls", "er", "ecr", "minpool")


@dataclass
class TrainConfig(RunConfig):
    """Everything that defines a SEAM run; saved in every checkpoint and the sidecar.
    Defaults are the release recipe (VOC12, 4 GPUs of batch 2 = 8 global, momentum 5e-4,
    fp32); `TrainConfig.from_recipe("tuned", ...)` starts from another recipe
    (seam.training.trainers.recipes). `recipe` names the recipe the values came from; the
    sidecar lists every value that departs from it."""

    data: str = setting("data/VOC2012", path=True, required=True,
                        help="Data root: VOC (JPEGImages/), a synth set, or an image folder.")
    dataset: str = setting("auto", choices=dataset_choices, help=DATASET_HELP)
    train_list: str | None = setting(None, path=True, help=(
        "Image list (ids or VOC-style paths). VOC default: the authors' train_aug.txt."))
    labels: str | None = setting(None, path=True, help=(
        "Image-level labels: cls_labels.npy, JSON {image: [classes]} or CSV image,classes."))  # None: the set's
    classes: str | None = setting(None, help="Folder sets: class names, comma-separated or a classes.txt path.")
    # the release's effective momentum (its positional slip); tuned: 0.9
    momentum: float = setting(AUTHORS_MOMENTUM, recipe=True, help="SGD momentum (recipe: release 5e-4, tuned 0.9).")
    # release | tuned: what the values came from (sidecar, log); the command line's default depends on the data
    recipe: str = setting("release", recipe=True, help=RECIPE_HELP)
    resize_long: tuple[int, int] | None = setting(
        None, recipe=True, flag="--resize-range", parse=parse_int_pair,
        help="Random long side MIN,MAX (default 448,768 scaled by crop/448).")
    jitter: tuple[float, float, float, float] | None = setting(
        RELEASE_JITTER, recipe=True, parse=parse_n_floats(4, "4 numbers (brightness,contrast,saturation,hue)"),
        off="--no-jitter", off_help="No colour jitter.",
        help="ColorJitter brightness,contrast,saturation,hue (recipe: 0.3,0.3,0.3,0.1).")
    out: str = setting("runs/seam", path=True, help="Run directory.")
    threads: int | None = setting(None, help="torch CPU threads (default: torch's choice, all cores).")
    amp: bool | None = setting(False, recipe=True, help=(
        "Mixed precision (recipe: release off, tuned on with CUDA)."))  # None: on for CUDA; the release ran fp32
    er: bool = setting(True, flag=None, off="--no-er", help="Table 1: no equivariant regularisation.")
    pcm: bool = setting(True, flag=None, off="--no-pcm", help=(
        "Table 1: no PCM / ECR (with --no-er: the CAM baseline)."))  # PCM trained by ECR (+ min pooling)
    ohem: bool = setting(True, flag=None, off="--no-ohem", help="Table 1: plain mean instead of OHEM on ECR.")
    cam_norm: str = "minmax"  # max_norm of the loss block: the release's min-max, or "peak" (max only)
    transforms: tuple[str, ...] = setting(("rescale",), flag="--transform", parse=parse_transforms, help=(
        "Table 3: siamese transform(s), e.g. rescale or rescale,flip (rotate, translate)."))
    siamese_scale: float = setting(0.3, recipe=True, help="Rescale factor of the second branch (recipe: 0.3).")
    evaluate: bool = setting(True, flag=None, off="--no-eval", help=(
        "Skip the pseudo-label evaluation."))  # CAM pseudo-label mIoU after training when ground truth exists
    eval_list: str | None = setting(None, path=True, help=(
        "Images to score pseudo labels on (default: the training list)."))  # the paper scores VOC train
    eval_scales: tuple[float, ...] = setting(DEFAULT_SCALES, parse=parse_floats, help="CAM scales for the evaluation.")
    save_cams: bool = setting(False, help="Keep the evaluation CAMs in RUN_DIR/cams.")

    STAGE = "seam"
    # fields that must agree between a checkpoint and a --resume
    SCHEDULE_FIELDS = ("backbone", "batch_size", "epochs", "lr", "weight_decay", "momentum", "authors_momentum",
                       "crop", "resize_long", "jitter", "seed", "er", "pcm", "ohem", "cam_norm", "transforms",
                       "siamese_scale")

    def __post_init__(self) -> None:
        if self.jitter is True:
            self.jitter = RELEASE_JITTER
        elif self.jitter is False:
            self.jitter = None
        elif self.jitter is not None:
            self.jitter = tuple(float(v) for v in self.jitter)
        self.transforms = tuple(self.transforms)
        self.eval_scales = tuple(float(v) for v in self.eval_scales)
        if self.resize_long is not None:
            self.resize_long = tuple(int(v) for v in self.resize_long)

    @property
    def switches(self) -> LossSwitches:
        return LossSwitches(er=self.er, pcm=self.pcm, ohem=self.ohem, norm=self.cam_norm)

    def validate(self) -> None:
        self.validate_recipe()
        self.switches  # noqa: B018 - validates cam_norm
        self.validate_schedule()
        if self.crop < 16:
            raise ValueError(f"crop must be >= 16, got {self.crop}")
        if self.jitter is not None and (len(self.jitter) != 4 or any(v < 0 for v in self.jitter)
                                        or self.jitter[3] > 0.5):
            raise ValueError(f"jitter takes 4 non-negative strengths (hue <= 0.5), got {self.jitter}")
        SiameseConfig(ops=tuple(self.transforms), scale=self.siamese_scale)
        AugmentConfig(crop=self.crop, resize_long=self.resize_long).resize_range  # noqa: B018 - validates
        if not self.eval_scales or any(s <= 0 for s in self.eval_scales):
            raise ValueError("evaluation scales must be positive")


class SiameseStep(nn.Module):
    """Both branches in one forward so DDP sees a single call per step."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, img1: torch.Tensor, img2: torch.Tensor | None = None):
        out1 = self.net(img1)
        out2 = self.net(img2) if img2 is not None else None
        return out1, out2


class SeamTrainer(Trainer[TrainConfig]):
    """SEAM on image-level labels: the siamese step and its losses, PCM frozen with
    --no-pcm, the CAM pseudo-label score after training."""

    kind = "seam"
    final_name = SEAM_FINAL
    loss_terms = LOSS_TERMS
    tensorboard = True
    data_changed = "the dataset fingerprint (ids + labels) changed"

    def build(self, log: Log) -> Parts:
        cfg = self.cfg
        self.ds, dataset = _training_data(cfg)
        ds = self.ds
        return Parts(create_model("seam", cfg.backbone, ds.num_classes), dataset, ds.fingerprint(), {
            "num_classes": ds.num_classes,
            "class_names": ds.class_names,
            "dataset": {"kind": ds.kind, "root": str(cfg.data), "num_images": len(ds), "source": ds.source,
                        "class_counts": ds.class_counts()},
        })

    def initialise(self, model: nn.Module, log: Log) -> dict[str, Any]:
        return _initialise(self.cfg, model, self.ds.num_classes, log)

    def freeze(self, model: nn.Module) -> list[str]:
        return freeze_parameters(model, train_pcm=self.cfg.switches.pcm)

    def describe_run(self, run: Run, parts: Parts, frozen: list[str], amp: bool) -> str:
        return _describe_run(self.cfg, run.d, self.ds, run.ipe, amp, len(frozen))

    def make_step(self, model: nn.Module, d: Dist, amp: bool) -> Step:
        return siamese_step(self.cfg, d.parallel(SiameseStep(model)), d.device, amp)

    def finish(self, run: Run, final: Path, sidecar: dict[str, Any], on_progress: OnProgress | None,
               log: Log) -> dict[str, Any]:
        """Score the CAM pseudo labels into the sidecar (when asked and ground truth exists)."""
        if not self.cfg.evaluate:
            return sidecar
        res = _score_cams(self.cfg, run, self.ds, on_progress, log)
        if res is None:
            return sidecar
        sidecar["metrics"]["eval"] = res
        write_sidecar(final, sidecar)
        log(f"pseudo-label mIoU {res['miou']:.2f}% at background threshold {res['best_threshold']:.2f} "
            f"(all-background {res['all_background_miou']:.2f}%), mFN {_fmt(res['mfn'])}, mFP {_fmt(res['mfp'])}")
        return sidecar


def train(cfg: TrainConfig, on_progress: OnProgress | None = None, log: Log | None = None) -> dict[str, Any]:
    """Train, save, evaluate. Returns the sidecar dict written beside seam_final.pth."""
    return SeamTrainer(cfg).train(on_progress, log)


def _training_data(cfg: TrainConfig) -> tuple[ImageLabelSet, AugmentedDataset]:
    """The image-label set and its augmented view."""
    ds = build_dataset(cfg.dataset, cfg.data, cfg.train_list, cfg.labels, cfg.classes)
    if len(ds) < cfg.batch_size:
        raise DatasetError(f"{len(ds)} training images are fewer than one batch of {cfg.batch_size}")
    aug = AugmentConfig(crop=cfg.crop, resize_long=cfg.resize_long, jitter=cfg.jitter)
    return ds, AugmentedDataset(ds, aug, cfg.seed)


def _initialise(cfg: TrainConfig, model: nn.Module, num_classes: int, log: Callable[[str], None]) -> dict[str, Any]:
    """--weights into `model` on a fresh run; returns the sidecar's "initialisation" entry."""
    if not cfg.weights:
        log("no --weights: training from random initialisation (the paper starts from ImageNet weights)")
        return {"source": None}
    if cfg.resume:  # the checkpoint's own record replaces it in Run.resume
        return {"source": None}
    report = initialise_from(model, cfg.weights)
    log(f"initialised from {report['source']}")
    if report["missing"]:
        log(f"  uninitialised (random) keys: {summarise_keys(report['missing'])}")
    if report["unexpected"]:
        log(f"  ignored checkpoint keys: {summarise_keys(report['unexpected'])}")
    for r in report["reinitialised"]:
        log(f"  re-initialised for {num_classes} classes: {r}")
    return report


def _describe_run(cfg: TrainConfig, d: Dist, ds: ImageLabelSet, ipe: int, amp: bool, n_frozen: int) -> str:
    switches = cfg.switches
    return (f"{ds.kind} data {cfg.data}: {len(ds)} images, {ds.num_classes - 1} classes "
            f"({', '.join(ds.foreground[:8])}{', ...' if ds.num_classes > 9 else ''}); "
            f"{ipe} iterations/epoch x {cfg.epochs} epochs, global batch {cfg.batch_size} on {d.world} x "
            f"{d.device.type}{' (AMP)' if amp else ''}; losses: cls{' + ER' if switches.er else ''}"
            f"{' + ECR' + ('(OHEM)' if switches.ohem else '') if switches.pcm else ''}; "
            f"{n_frozen} frozen tensors, momentum {cfg.effective_momentum:g}")


def siamese_step(cfg: TrainConfig, net: nn.Module, device: torch.device,
                 amp: bool) -> Callable[[Any, int], dict[str, torch.Tensor]]:
    """The loop's step: both branches through `net` (a SiameseStep), then the SEAM losses.
    The second branch's transform is drawn from (seed, iteration) alone, so a resumed run repeats it."""
    switches = cfg.switches
    scfg = SiameseConfig(ops=tuple(cfg.transforms), scale=cfg.siamese_scale)

    def step(batch: Any, iteration: int) -> dict[str, torch.Tensor]:
        img1, label, _ = batch
        img1 = img1.to(device, non_blocking=True)
        label = torch.cat([torch.ones(label.shape[0], 1), label], dim=1).to(device)  # (B, C), bg = 1
        plan = None
        img2 = None
        if switches.siamese:
            gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + iteration)
            plan = sample_transform(scfg, img1.shape[0], tuple(img1.shape[-2:]), gen)
            img2 = plan.image(img1)
        with torch.autocast(device_type=device.type, dtype=torch.float16, enabled=amp):
            out1, out2 = net(img1, img2)
        out1 = tuple(t.float() for t in out1)
        out2 = tuple(t.float() for t in out2) if out2 is not None else None
        return seam_losses(out1, out2, label, plan.map if plan else None, plan.mask if plan else None, switches)

    return step


def _score_cams(cfg: TrainConfig, run: Run, ds: ImageLabelSet, on_progress: Callable[[Progress], None] | None,
                log: Callable[[str], None]) -> dict[str, Any] | None:
    """CAM pseudo-label mIoU on the evaluation list (None without ground truth); the CAMs
    stay in RUN_DIR/cams with save_cams, else in a temporary directory."""
    from seam.training.trainers.cam_eval import score_cams

    items = eval_items(ds, cfg.eval_list)
    if not items:
        log("no ground truth (SegmentationClass/<id>.png) for the evaluation list: skipping the mIoU")
        return None
    cam_dir = run.run_dir / "cams" if cfg.save_cams else Path(tempfile.mkdtemp(prefix="seam_cams_"))
    n = len(items)
    done = [0]

    def on_image(_iid: str) -> None:
        done[0] += 1
        if on_progress is not None:
            on_progress(Progress(done[0], n, 0, 1, {}, 0.0, 0.0, phase="eval"))

    log(f"scoring CAM pseudo labels on {n} images with ground truth (scales {list(cfg.eval_scales)}, "
        f"{'PCM-refined' if cfg.pcm else 'raw'} CAMs)")
    try:
        t0 = time.time()
        res = score_cams(run.model, items, ds.gt_dir, ds.class_names, cam_dir, cfg.eval_scales, refined=cfg.pcm,
                         device=run.d.device, on_image=on_image)
        res["seconds"] = round(time.time() - t0, 1)
        res["list"] = cfg.eval_list or ds.source.get("list", "training list")
    finally:
        if not cfg.save_cams:
            shutil.rmtree(cam_dir, ignore_errors=True)
    return res


def _fmt(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.3f}"


__all__ = ["LOSS_TERMS", "SeamTrainer", "TrainConfig", "train"]
