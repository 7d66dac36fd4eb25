"""SEAM training (the authors' train_SEAM.py), single process or DDP under torchrun.

One step: img2 = A(img1) (scale 0.3 by default); (cam1, rv1) = net(img1),
(cam2, rv2) = net(img2); loss = cls + ER + ECR (training.losses.seam_losses).
BN frozen, conv1a/b2* frozen, four parameter groups with poly decay, SGD.

Run directory: checkpoint.pth (each epoch, and when stopped early; exact --resume),
seam_final.pth (bare state dict, the authors' format) + seam_final.json (sidecar:
config, class names, backbone, dataset fingerprint, metrics), log.csv, and
TensorBoard events when tensorboard is importable.
"""
from __future__ import annotations

import dataclasses
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from seam.common.cam import DEFAULT_SCALES
from seam.common.image import IMAGENET_MEAN, IMAGENET_STD
from training.data.augment import AugmentConfig
from training.data.datasets import (
    AugmentedDataset,
    DatasetError,
    ImageLabelSet,
    build_dataset,
    eval_items,
)
from training.data.loader import iterations_per_epoch
from training.engine.loop import (
    Dist,
    Progress,
    Run,
    RunLog,
    TrainingError,
    check_resume,
    init_distributed,
    open_run_dir,
    prepare,
    stderr_log,
)
from training.engine.recipes import RECIPES, describe, recipe_report, with_recipe
from training.engine.schedule import AUTHORS_MOMENTUM, PolySchedule, make_optimizer
from training.engine.siamese import SiameseConfig, sample_transform
from training.engine.state import (
    CHECKPOINT_NAME,
    FINAL_NAME,
    initialise_from,
    save_final,
    summarise_keys,
    write_sidecar,
)
from training.losses import LossSwitches, seam_losses
from training.models.registry import backbone_config, create_model
from training.models.resnet38 import freeze_batchnorm

LOSS_TERMS = ("loss", "cls", "er", "ecr", "minpool")
CALIBRATION_EPOCH = 1_000_000  # augmentation key of the BN calibration samples, never a training epoch


@dataclass
class TrainConfig:
    """Everything that defines a SEAM run; saved in every checkpoint and the sidecar.
    Defaults are the release recipe (VOC12, 4 GPUs of batch 2 = 8 global, momentum 5e-4,
    fp32); `TrainConfig.from_recipe("tuned", ...)` starts from another recipe
    (training.engine.recipes). `recipe` names the recipe the values came from; the
    sidecar lists every value that departs from it."""

    data: str = "data/VOC2012"  # root with JPEGImages/ (and SegmentationClass/ for evaluation)
    dataset: str = "auto"  # voc | folder | synth | auto
    train_list: str | None = None  # None: the data set's default list (VOC: the authors' train_aug.txt)
    labels: str | None = None  # None: the data set's default (VOC: the authors' cls_labels.npy)
    classes: str | None = None  # folder sets: class names (comma list or classes.txt)
    weights: str | None = None  # ImageNet .params, a state dict, or a run dir; None = random init
    backbone: str = "resnet38"
    batch_size: int = 8  # global batch (per rank = batch / world size)
    epochs: int = 8
    lr: float = 0.01
    weight_decay: float = 5e-4
    momentum: float = AUTHORS_MOMENTUM  # the release's effective momentum (its positional slip); tuned: 0.9
    authors_momentum: bool = False  # True: force momentum 5e-4 whatever `momentum` says
    recipe: str = "release"  # release | tuned: what the values came from (sidecar, log)
    crop: int = 448
    resize_long: tuple[int, int] | None = None  # None: [448, 768] * crop / 448
    jitter: tuple[float, float, float, float] | None = (0.3, 0.3, 0.3, 0.1)  # brightness, contrast, saturation, hue
    out: str = "runs/seam"
    seed: int = 0
    device: str | None = None  # None: cuda if available
    workers: int | None = None  # None: 0 on CPU, min(8, cores) on CUDA
    threads: int | None = None  # torch intra-op CPU threads; None: torch's default (all cores)
    max_minutes: float | None = None  # stop (checkpoint + final weights) after this wall time
    amp: bool | None = False  # None: on for CUDA; the release ran fp32
    er: bool = True  # equivariant regularisation (Table 1)
    pcm: bool = True  # PCM trained by ECR (+ min pooling)
    ohem: bool = True  # OHEM top 20% on ECR
    cam_norm: str = "minmax"  # max_norm of the loss block: the release's min-max, or "peak" (max only)
    transforms: tuple[str, ...] = ("rescale",)  # Table 3: rescale, flip, rotate, translate
    siamese_scale: float = 0.3
    deterministic: bool = True
    evaluate: bool = True  # CAM pseudo-label mIoU after training when ground truth exists
    eval_list: str | None = None  # None: the training list (the paper scores VOC train)
    eval_scales: tuple[float, ...] = DEFAULT_SCALES
    save_cams: bool = False  # keep the evaluation CAMs in RUN_DIR/cams
    log_every: int = 10
    bn_calibration: int | None = None  # batches to calibrate frozen BN statistics; None: 10 without --weights, else 0
    resume: bool = False
    stop_after: int | None = None  # stop after this many iterations of this invocation (preemption drill)

    # fields that must agree between a checkpoint and a --resume
    SCHEDULE_FIELDS = ("backbone", "batch_size", "epochs", "lr", "weight_decay", "momentum", "authors_momentum",
                       "crop", "resize_long", "jitter", "seed", "er", "pcm", "ohem", "cam_norm", "transforms",
                       "siamese_scale")

    def __post_init__(self) -> None:
        if self.jitter is True:
            self.jitter = (0.3, 0.3, 0.3, 0.1)
        elif self.jitter is False:
            self.jitter = None
        elif self.jitter is not None:
            self.jitter = tuple(float(v) for v in self.jitter)
        self.transforms = tuple(self.transforms)
        self.eval_scales = tuple(float(v) for v in self.eval_scales)
        if self.resize_long is not None:
            self.resize_long = tuple(int(v) for v in self.resize_long)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in d.items()}

    @classmethod
    def from_recipe(cls, recipe: str, **settings: Any) -> TrainConfig:
        """Recipe values, then `settings` (None = not given, the recipe's value stays)."""
        return cls(recipe=recipe, **with_recipe("seam", recipe, settings))

    def recipe_report(self) -> dict[str, Any]:
        return recipe_report("seam", self.recipe, self.to_dict(), self.effective_momentum)

    @property
    def switches(self) -> LossSwitches:
        return LossSwitches(er=self.er, pcm=self.pcm, ohem=self.ohem, norm=self.cam_norm)

    @property
    def effective_momentum(self) -> float:
        return AUTHORS_MOMENTUM if self.authors_momentum else self.momentum

    def validate(self) -> None:
        if self.recipe not in RECIPES:
            raise ValueError(f"unknown recipe {self.recipe!r}; choose from {', '.join(RECIPES)}")
        self.switches  # noqa: B018 - validates cam_norm
        if self.batch_size < 1 or self.epochs < 1 or self.crop < 16:
            raise ValueError("batch size and epochs must be >= 1 and crop >= 16")
        if self.lr <= 0:
            raise ValueError(f"lr must be positive, got {self.lr}")
        backbone_config(self.backbone)
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


def set_train_mode(model: nn.Module) -> None:
    """train() for dropout, then BN back to eval with frozen affine parameters."""
    model.train()
    freeze_batchnorm(model)


def freeze_parameters(model: nn.Module, train_pcm: bool = True) -> list[str]:
    """requires_grad=False for conv1a/b2* (the authors' not_training), every BN, and the PCM
    layers when the PCM is not trained (--no-pcm). Returns the frozen names."""
    frozen_prefixes = model.frozen_prefixes()
    if not train_pcm:
        frozen_prefixes = (*frozen_prefixes, "f8_3.", "f8_4.", "f9.")
    freeze_batchnorm(model)
    frozen = []
    for name, p in model.named_parameters():
        if name.startswith(frozen_prefixes):
            p.requires_grad_(False)
        if not p.requires_grad:
            frozen.append(name)
    return frozen


@torch.no_grad()
def calibrate_batchnorm(model: nn.Module, dataset: AugmentedDataset, batches: int, batch_size: int,
                        device: torch.device, seed: int) -> int:
    """Set every BN's running mean/var to statistics of `batches` augmented batches.

    For random initialisation only: frozen BN (the authors' setting) is then a fixed,
    data-calibrated standardisation, as ImageNet statistics are for the published
    runs, instead of an identity that lets activations shrink ~6x per projection block.
    Uses no global RNG (dropout off, fixed sample keys), so seeded runs stay exact.
    Returns the number of images used.
    """
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    if not bns or batches <= 0:
        return 0
    was_training = model.training
    model.eval()
    saved = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the calibration batches
        m.train()
    order = np.random.default_rng([seed, 7]).permutation(len(dataset))
    n = min(len(dataset), batches * batch_size)
    for i in range(0, n, batch_size):
        idx = order[i:i + batch_size]
        x = torch.stack([dataset[(int(j), CALIBRATION_EPOCH)][0] for j in idx]).to(device)
        model(x)
    for m, mom in zip(bns, saved, strict=True):
        m.momentum = mom
        m.eval()
    model.train(was_training)
    freeze_batchnorm(model)
    return n


def train(cfg: TrainConfig, on_progress: Callable[[Progress], None] | None = None,
          log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Train, save, evaluate. Returns the sidecar dict written beside seam_final.pth."""
    cfg.validate()
    log = log or stderr_log
    d = init_distributed(cfg.device)
    # process-wide torch settings the run changes, restored afterwards (library callers, tests)
    saved = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
             torch.get_num_threads())
    try:
        return _train(cfg, d, on_progress, log if d.main else (lambda _m: None))
    finally:
        torch.use_deterministic_algorithms(saved[0], warn_only=saved[1])
        torch.set_num_threads(saved[2])
        if d.world > 1 and dist.is_initialized():
            dist.destroy_process_group()


def _train(cfg: TrainConfig, d: Dist, on_progress, log) -> dict[str, Any]:
    run_dir = open_run_dir(cfg, d)
    amp, workers = prepare(cfg, d)
    log(describe("seam", cfg.recipe, cfg.to_dict(), cfg.effective_momentum))
    if cfg.threads:
        torch.set_num_threads(cfg.threads)  # on a shared CPU, 1 thread often beats oversubscription
    cuda = d.device.type == "cuda"

    ds = build_dataset(cfg.dataset, cfg.data, cfg.train_list, cfg.labels, cfg.classes)
    if len(ds) < cfg.batch_size:
        raise DatasetError(f"{len(ds)} training images are fewer than one batch of {cfg.batch_size}")
    fingerprint = ds.fingerprint()
    aug = AugmentConfig(crop=cfg.crop, resize_long=cfg.resize_long, jitter=cfg.jitter)
    dataset = AugmentedDataset(ds, aug, cfg.seed)
    ipe = iterations_per_epoch(len(ds), cfg.batch_size)
    max_iter = ipe * cfg.epochs
    switches = cfg.switches
    scfg = SiameseConfig(ops=tuple(cfg.transforms), scale=cfg.siamese_scale)

    model = create_model("seam", cfg.backbone, ds.num_classes)
    init_report: dict[str, Any] = {"source": None}
    if cfg.weights and not cfg.resume:
        init_report = initialise_from(model, cfg.weights)
        log(f"initialised from {init_report['source']}")
        if init_report["missing"]:
            log(f"  uninitialised (random) keys: {summarise_keys(init_report['missing'])}")
        if init_report["unexpected"]:
            log(f"  ignored checkpoint keys: {summarise_keys(init_report['unexpected'])}")
        for r in init_report["reinitialised"]:
            log(f"  re-initialised for {ds.num_classes} classes: {r}")
    elif not cfg.weights:
        log("no --weights: training from random initialisation (the paper starts from ImageNet weights)")
    frozen = freeze_parameters(model, train_pcm=switches.pcm)
    model.to(d.device)
    calib = cfg.bn_calibration if cfg.bn_calibration is not None else (0 if cfg.weights else 10)
    if calib and not cfg.resume:
        n_cal = calibrate_batchnorm(model, dataset, calib, cfg.batch_size, d.device, cfg.seed)
        log(f"random initialisation: frozen BN statistics calibrated on {n_cal} augmented images")
        init_report["bn_calibration_images"] = n_cal
    opt = make_optimizer(model, cfg.lr, cfg.weight_decay, cfg.effective_momentum)
    run = Run(cfg, d, run_dir, model, opt, PolySchedule(opt, max_iter), torch.amp.GradScaler("cuda", enabled=amp),
              ipe, fingerprint, init_report, checkpoint_extra={"class_names": ds.class_names})
    if cfg.resume:
        run.resume(lambda ck: check_resume(ck, cfg, fingerprint, "the dataset fingerprint (ids + labels) changed"),
                   log)

    log(f"{ds.kind} data {cfg.data}: {len(ds)} images, {ds.num_classes - 1} classes "
        f"({', '.join(ds.foreground[:8])}{', ...' if ds.num_classes > 9 else ''}); "
        f"{ipe} iterations/epoch x {cfg.epochs} epochs, global batch {cfg.batch_size} on {d.world} x {d.device.type}"
        f"{' (AMP)' if amp else ''}; losses: cls{' + ER' if switches.er else ''}"
        f"{' + ECR' + ('(OHEM)' if switches.ohem else '') if switches.pcm else ''}; "
        f"{len(frozen)} frozen tensors, momentum {cfg.effective_momentum:g}")

    net: nn.Module = SiameseStep(model)
    if d.world > 1:
        net = nn.parallel.DistributedDataParallel(net, device_ids=[d.local_rank] if cuda else None)

    def step(batch, iteration: int) -> dict[str, torch.Tensor]:
        img1, label, _ = batch
        img1 = img1.to(d.device, non_blocking=True)
        label = torch.cat([torch.ones(label.shape[0], 1), label], dim=1).to(d.device)  # (B, C), bg = 1
        plan = None
        img2 = None
        if switches.siamese:
            gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + iteration)
            plan = sample_transform(scfg, img1.shape[0], tuple(img1.shape[-2:]), gen)
            img2 = plan.image(img1)
        with torch.autocast(device_type=d.device.type, dtype=torch.float16, enabled=amp):
            out1, out2 = net(img1, img2)
        out1 = tuple(t.float() for t in out1)
        out2 = tuple(t.float() for t in out2) if out2 is not None else None
        return seam_losses(out1, out2, label, plan.map if plan else None, plan.mask if plan else None, switches)

    logger = RunLog(run_dir, LOSS_TERMS, d.main, tensorboard=True)
    stopped = run.train(dataset, workers, LOSS_TERMS, step, set_train_mode, logger, on_progress, log)

    result: dict[str, Any] = {}
    if d.main:
        result = _finish(cfg, run, ds, stopped, run.seconds, amp, on_progress, log)
    return result  # no barrier: rank 0 alone evaluates, the others may leave


def _finish(cfg, run: Run, ds: ImageLabelSet, stopped, seconds, amp, on_progress, log) -> dict[str, Any]:
    d, model, history = run.d, run.model, run.history
    sidecar: dict[str, Any] = {
        "kind": "seam",
        "backbone": cfg.backbone,
        "num_classes": ds.num_classes,
        "class_names": ds.class_names,
        "normalization": {"mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD)},
        "dataset_fingerprint": run.fingerprint,
        "dataset": {"kind": ds.kind, "root": str(cfg.data), "num_images": len(ds), "source": ds.source,
                    "class_counts": ds.class_counts()},
        "config": cfg.to_dict(),
        "recipe": cfg.recipe_report(),
        "training": run.summary(stopped, seconds, amp),
        "metrics": {"history": history, "final": history[-1] if history else None},
    }
    final = save_final(run.run_dir, model, sidecar)
    log(f"saved {final} (+ {final.with_suffix('.json').name})")
    if not cfg.evaluate:
        return sidecar
    items = eval_items(ds, cfg.eval_list)
    if not items:
        log("no ground truth (SegmentationClass/<id>.png) for the evaluation list: skipping the mIoU")
        return sidecar
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
        res = _score(model, items, ds, cam_dir, cfg, d, on_image)
        res["seconds"] = round(time.time() - t0, 1)
        res["list"] = cfg.eval_list or ds.source.get("list", "training list")
    finally:
        if not cfg.save_cams:
            shutil.rmtree(cam_dir, ignore_errors=True)
    sidecar["metrics"]["eval"] = res
    write_sidecar(final, sidecar)
    log(f"pseudo-label mIoU {res['miou']:.2f}% at background threshold {res['best_threshold']:.2f} "
        f"(all-background {res['all_background_miou']:.2f}%), mFN {_fmt(res['mfn'])}, mFP {_fmt(res['mfp'])}")
    return sidecar


def _score(model, items, ds, cam_dir, cfg, d, on_image):
    from training.engine.cam_eval import score_cams

    return score_cams(model, items, ds.gt_dir, ds.class_names, cam_dir, cfg.eval_scales, refined=cfg.pcm,
                      device=d.device, on_image=on_image)


def _fmt(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.3f}"


__all__ = ["CHECKPOINT_NAME", "FINAL_NAME", "Progress", "TrainConfig", "TrainingError", "train"]
