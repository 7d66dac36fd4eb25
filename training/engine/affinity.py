"""AffinityNet training (the authors' `train_aff.py`) and the training loop it shares
with DeepLab retraining.

The loop is the SEAM trainer's (`loop.py`: device + DDP set-up, resume, checkpoints,
the epoch loop), with its four parameter groups + poly schedule (`schedule.py`), run
files / weight initialisation (`state.py`) and BN/conv1a/b2 freezing (`trainer.py`). Single process or DDP under \
torchrun, AMP on
CUDA, `--resume` from RUN_DIR/checkpoint.pth, `--max-minutes` / `stop_after` stops
that leave a resumable checkpoint.

Run directory: checkpoint.pth, <kind>_final.pth (bare state dict, the authors' key
names) + <kind>_final.json (sidecar: kind, backbone, class names, config,
training summary, loss history), log.csv.
"""
from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from seam.common.image import IMAGENET_MEAN, IMAGENET_STD
from seam.common.random_walk import DEFAULT_RADIUS
from training.data.affinity import AffinityAugmentConfig, AffinityDataset
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
from training.engine.state import (
    atomic_torch_save,
    bare_state_dict,
    resolve_weights,
    summarise_keys,
    write_sidecar,
)
from training.engine.trainer import (
    calibrate_batchnorm,
    freeze_parameters,
    set_train_mode,
)
from training.models.affinity import pair_affinity
from training.models.checkpoint import CheckpointError, load_weights, read_checkpoint
from training.models.registry import backbone_config, create_model

EPS = 1e-5
AFFINITY_FINAL = "affinity_final.pth"


def affinity_loss(aff: torch.Tensor, pairs: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """bg/4 + fg/4 + neg/2, each a mean cross-entropy over its pair set (the whole batch).

    aff (B, P, N) in (0, 1]; pairs (B, 3, P, N) float indicators: bg-positive,
    fg-positive, negative. Positives cost -log(aff + 1e-5), negatives
    -log(1 + 1e-5 - aff); the means divide by (count + 1e-5) as the release.
    """
    bg, fg, neg = pairs.unbind(dim=1)
    aff = aff.float()
    pos_ce = -torch.log(aff + EPS)
    bg_loss = (bg * pos_ce).sum() / (bg.sum() + EPS)
    fg_loss = (fg * pos_ce).sum() / (fg.sum() + EPS)
    neg_loss = (neg * -torch.log(1.0 + EPS - aff)).sum() / (neg.sum() + EPS)
    total = bg_loss / 4 + fg_loss / 4 + neg_loss / 2
    return total, {"bg": bg_loss.detach(), "fg": fg_loss.detach(), "neg": neg_loss.detach()}


# --------------------------------------------------------------------------- shared loop

@dataclass
class StageConfig:
    """Settings shared by the AffinityNet and DeepLab trainers (saved in every checkpoint)."""

    weights: str | None = None  # ImageNet .params, a state dict (authors' or ours), or a run dir
    backbone: str = "resnet38"
    batch_size: int = 8  # global batch (per rank = batch / world size)
    epochs: int = 8
    lr: float = 0.01
    weight_decay: float = 5e-4
    momentum: float = 0.9
    authors_momentum: bool = False  # True: momentum 5e-4, what the release really ran with
    crop: int = 448
    jitter: bool = True
    out: str = "runs/affinity"
    seed: int = 0
    device: str | None = None  # None: cuda if available
    workers: int | None = None  # None: 0 on CPU, min(8, cores) on CUDA
    max_minutes: float | None = None  # stop (checkpoint + final weights) after this wall time
    amp: bool | None = None  # None: on for CUDA
    deterministic: bool = True
    log_every: int = 10
    resume: bool = False
    stop_after: int | None = None  # stop after this many iterations of this invocation
    bn_calibration: int | None = None  # batches to calibrate frozen BN statistics; None: 10 without --weights, else 0

    SCHEDULE_FIELDS = ("backbone", "batch_size", "epochs", "lr", "weight_decay", "momentum", "authors_momentum",
                       "crop", "jitter", "seed")

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in d.items()}

    @property
    def effective_momentum(self) -> float:
        return AUTHORS_MOMENTUM if self.authors_momentum else self.momentum

    def validate(self) -> None:
        if self.batch_size < 1 or self.epochs < 1:
            raise ValueError("batch size and epochs must be >= 1")
        if self.lr <= 0:
            raise ValueError(f"lr must be positive, got {self.lr}")
        backbone_config(self.backbone)


@dataclass
class Stage:
    """What differs between the trainers that share `run_stage`."""

    kind: str  # affinity | deeplab
    final_name: str
    loss_terms: tuple[str, ...]  # "loss" first
    # (net, batch, device, amp) -> {"loss": tensor, other terms: tensors}
    step: Callable[[nn.Module, Sequence[torch.Tensor], torch.device, bool], dict[str, torch.Tensor]]
    sidecar: dict[str, Any]  # kind-specific sidecar entries (class_names, dataset, ...)
    fingerprint: str  # identifies the training data; a --resume must see the same
    extra_params: list[nn.Parameter] = dataclasses.field(default_factory=list)  # e.g. new BN (10x lr, no decay)
    train_mode: Callable[[nn.Module], None] = set_train_mode
    unfreeze: bool = False  # train every conv (conv1a, b2* too), as the authors' DeepLab run; BN params stay out
    poly_extra: int = 0  # poly over max_iter + poly_extra (the authors' DeepLab: 1)


def init_from_weights(model: nn.Module, path: str | Path, kind: str) -> dict[str, Any]:
    """strict=False initialisation from ImageNet `.params`, a SEAM / AffinityNet / DeepLab
    checkpoint or a run dir. Head layers are taken only from a checkpoint of the same kind
    (a SEAM checkpoint gives the backbone); any other shape mismatch is an error."""
    src = resolve_weights(path)
    sd, meta = read_checkpoint(src)
    if kind == "deeplab":
        from training.models.deeplab import from_authors_state_dict, is_authors_state_dict

        if is_authors_state_dict(sd):  # the authors' released deeplabv1: their key names
            sd, meta = from_authors_state_dict(sd), {**meta, "kind": "deeplab", "source": "authors deeplabv1"}
    own = model.state_dict()
    head = tuple(f"{n}." for n, m in model.named_children() if m in model.new_modules())
    same_kind = meta.get("kind") == kind
    skipped = sorted(k for k in sd if k.startswith(head) and not same_kind)
    sd = {k: v for k, v in sd.items() if k not in skipped}
    for k, v in sd.items():
        if k in own and own[k].shape != v.shape:
            if k.startswith(head):
                skipped.append(k)
            else:
                raise CheckpointError(f"--weights {src}: {k} has shape {tuple(v.shape)} but the network expects "
                                      f"{tuple(own[k].shape)}; is --backbone right?")
    sd = {k: v for k, v in sd.items() if k not in skipped}
    unexpected = sorted(k for k in sd if k not in own)
    missing = [k for k in load_weights(model, sd, strict=False) if not k.endswith("num_batches_tracked")]
    return {"source": str(src), "format": meta.get("source", meta.get("kind", "torch")), "missing": missing,
            "unexpected": unexpected, "skipped_head": skipped}


def files_fingerprint(ids: Sequence[str], label_paths: Sequence[Path]) -> str:
    """sha256 over ids and label file sizes: cheap, catches a changed label set."""
    h = hashlib.sha256()
    for i, p in zip(ids, label_paths, strict=True):
        h.update(f"{i}\t{Path(p).stat().st_size}\n".encode())
    return h.hexdigest()


def labelled_items(items: Iterable[tuple[str, Path]], label_dir: Path) -> tuple[list[str], list[Path], list[Path]]:
    """(ids, image paths, label paths) of the (id, image path) items that have <label_dir>/<id>.png."""
    ids, paths, labels = [], [], []
    for i, p in items:
        lp = label_dir / f"{i}.png"
        if lp.is_file():
            ids.append(i)
            paths.append(p)
            labels.append(lp)
    return ids, paths, labels


def run_stage(cfg: StageConfig, d: Dist, stage: Stage, model: nn.Module, dataset: torch.utils.data.Dataset,
              amp: bool, workers: int, on_progress: Callable[[Progress], None] | None,
              log: Callable[[str], None]) -> dict[str, Any]:
    """Optimise `model` on `dataset` with `stage.step`; save checkpoints and the final weights.
    Returns the sidecar dict (rank 0; {} elsewhere)."""
    run_dir = open_run_dir(cfg, d)
    has_recipe = hasattr(cfg, "recipe_report")
    if has_recipe:
        log(describe(stage.kind, cfg.recipe, cfg.to_dict(), cfg.effective_momentum))
    if len(dataset) < cfg.batch_size:
        raise TrainingError(f"{len(dataset)} training images are fewer than one batch of {cfg.batch_size}")
    cuda = d.device.type == "cuda"
    ipe = iterations_per_epoch(len(dataset), cfg.batch_size)
    max_iter = ipe * cfg.epochs

    init_report: dict[str, Any] = {"source": None}
    if cfg.weights and not cfg.resume:
        init_report = init_from_weights(model, cfg.weights, stage.kind)
        log(f"initialised from {init_report['source']}")
        if init_report["missing"]:
            log(f"  uninitialised (random) keys: {summarise_keys(init_report['missing'])}")
        if init_report["skipped_head"]:
            log(f"  head keys not taken from it: {summarise_keys(init_report['skipped_head'])}")
    elif not cfg.weights:
        log("no --weights: training from random initialisation")
    frozen = freeze_parameters(model)
    if stage.unfreeze:
        for m in model.modules():
            if isinstance(m, nn.Conv2d):
                for p in m.parameters():
                    p.requires_grad_(True)
        frozen = [n for n, p in model.named_parameters() if not p.requires_grad]
    model.to(d.device)
    calib = cfg.bn_calibration if cfg.bn_calibration is not None else (0 if cfg.weights else 10)
    if calib and not cfg.resume:  # random init: as the SEAM trainer, data-calibrated frozen BN
        n_cal = calibrate_batchnorm(model, dataset, calib, cfg.batch_size, d.device, cfg.seed)
        log(f"random initialisation: frozen BN statistics calibrated on {n_cal} augmented images")
        init_report["bn_calibration_images"] = n_cal
    for p in stage.extra_params:  # trained despite freeze_parameters / calibration
        p.requires_grad_(True)
    opt = make_optimizer(model, cfg.lr, cfg.weight_decay, cfg.effective_momentum)
    if stage.extra_params:
        opt.add_param_group({"params": list(stage.extra_params), "lr": cfg.lr * 10, "initial_lr": cfg.lr * 10,
                             "lr_mult": 10.0, "weight_decay": 0.0, "name": "new_norm"})
    extra = {"kind": stage.kind,
             **({"class_names": stage.sidecar["class_names"]} if "class_names" in stage.sidecar else {})}
    if getattr(cfg, "max_iterations", None):  # iteration-counted runs: enough epochs to reach the cap
        cfg.epochs = -(-cfg.max_iterations // ipe)
        max_iter = min(max_iter, ipe * cfg.epochs, cfg.max_iterations)
    run = Run(cfg, d, run_dir, model, opt, PolySchedule(opt, max_iter + stage.poly_extra),
              torch.amp.GradScaler("cuda", enabled=amp),
              ipe, stage.fingerprint, init_report, checkpoint_extra=extra)
    if cfg.resume:
        run.resume(lambda ck: _check_resume(ck, cfg, stage), log)
    log(f"{stage.kind}: {len(dataset)} images, {ipe} iterations/epoch x {cfg.epochs} epochs, global batch "
        f"{cfg.batch_size} on {d.world} x {d.device.type}{' (AMP)' if amp else ''}; {len(frozen)} frozen tensors, "
        f"momentum {cfg.effective_momentum:g}")

    net: nn.Module = model
    if d.world > 1:
        net = nn.parallel.DistributedDataParallel(model, device_ids=[d.local_rank] if cuda else None)
    logger = RunLog(run_dir, stage.loss_terms, d.main)
    stopped = run.train(dataset, workers, stage.loss_terms, lambda batch, _it: stage.step(net, batch, d.device, amp),
                        stage.train_mode, logger, on_progress, log)
    seconds = run.seconds
    if not d.main:
        return {}
    sidecar: dict[str, Any] = {
        "kind": stage.kind,
        "backbone": cfg.backbone,
        **stage.sidecar,
        "normalization": {"mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD)},
        "dataset_fingerprint": stage.fingerprint,
        "config": cfg.to_dict(),
        **({"recipe": cfg.recipe_report()} if has_recipe else {}),
        "training": run.summary(stopped, seconds, amp),
        "metrics": {"history": run.history, "final": run.history[-1] if run.history else None},
    }
    final = run_dir / stage.final_name
    atomic_torch_save(bare_state_dict(model), final)
    write_sidecar(final, sidecar)
    log(f"saved {final} (+ {final.with_suffix('.json').name})")
    return sidecar


def _check_resume(ck: dict[str, Any], cfg: StageConfig, stage: Stage) -> None:
    if ck.get("kind", stage.kind) != stage.kind:
        raise CheckpointError(f"--resume: the checkpoint is a {ck.get('kind')} run, not {stage.kind}")
    check_resume(ck, cfg, stage.fingerprint, "the images or labels changed")


def train_stage(cfg: StageConfig, build: Callable[[], tuple[Stage, nn.Module, torch.utils.data.Dataset]],
                on_progress: Callable[[Progress], None] | None, log: Callable[[str], None] | None) -> dict[str, Any]:
    """Validate `cfg`, set up the device(s), `build()` the stage, model and data set, run them."""
    cfg.validate()
    log = log or stderr_log
    d = init_distributed(cfg.device)
    try:
        say = log if d.main else (lambda _m: None)
        amp, workers = prepare(cfg, d)
        stage, model, dataset = build()
        return run_stage(cfg, d, stage, model, dataset, amp, workers, on_progress, say)
    finally:
        if d.world > 1 and dist.is_initialized():
            dist.destroy_process_group()


# --------------------------------------------------------------------------- AffinityNet

@dataclass
class AffinityTrainConfig(StageConfig):
    """An AffinityNet run. Defaults are the release recipe, SEAM's train_aff.py: batch 8,
    8 epochs, crop 448, flip + colour jitter, radius 5, lr 0.01, SGD momentum 5e-4 (the
    release's PolyOptimizer puts weight decay in SGD's momentum slot), weight decay 5e-4
    per group, poly 0.9, fp32. (psa's train_aff.py, another release, uses lr 0.1.)
    `from_recipe("tuned", ...)`: momentum 0.9, AMP on CUDA."""

    data: str = "data/VOC2012"  # root with JPEGImages/ (or an image folder)
    labels: str = "runs/aff_labels"  # <id>.png AffinityNet labels (seam.common.affinity_labels)
    dataset: str = "auto"  # for the image list: voc | folder | synth | auto
    train_list: str | None = None  # None: every image that has a label PNG (in the data set's order)
    image_labels: str | None = None  # image-level label file of the data set (voc/folder), if not default
    radius: int = DEFAULT_RADIUS
    flip: bool = True
    momentum: float = AUTHORS_MOMENTUM  # the release's effective momentum; tuned: 0.9
    amp: bool | None = False  # the release ran fp32; None: on with CUDA
    recipe: str = "release"  # release | tuned (training.engine.recipes)

    SCHEDULE_FIELDS = (*StageConfig.SCHEDULE_FIELDS, "radius", "flip")

    @classmethod
    def from_recipe(cls, recipe: str, **settings: Any) -> AffinityTrainConfig:
        """Recipe values, then `settings` (None = not given, the recipe's value stays)."""
        return cls(recipe=recipe, **with_recipe("affinity", recipe, settings))

    def recipe_report(self) -> dict[str, Any]:
        return recipe_report("affinity", self.recipe, self.to_dict(), self.effective_momentum)

    def validate(self) -> None:
        super().validate()
        if self.recipe not in RECIPES:
            raise ValueError(f"unknown recipe {self.recipe!r}; choose from {', '.join(RECIPES)}")
        AffinityAugmentConfig(crop=self.crop, radius=self.radius)


def affinity_items(cfg: AffinityTrainConfig) -> tuple[list[str], list[Path], list[Path], list[str]]:
    """(ids, image paths, label paths, class names) of the training images that have labels."""
    from training.data.datasets import DatasetError, build_dataset

    label_dir = Path(cfg.labels)
    if not label_dir.is_dir():
        raise DatasetError(f"AffinityNet label directory not found: {label_dir}")
    ds = build_dataset(cfg.dataset, cfg.data, cfg.train_list, cfg.image_labels, check_images=False)
    ids, paths, labels = labelled_items(zip(ds.ids, ds.paths, strict=True), label_dir)
    if not ids:
        raise DatasetError(f"none of the {len(ds)} training images has a label in {label_dir}")
    if cfg.train_list and len(ids) < len(ds):
        missing = [i for i in ds.ids if not (label_dir / f"{i}.png").is_file()]
        raise DatasetError(f"{len(missing)} listed images have no label in {label_dir} (first: {missing[0]})")
    return ids, paths, labels, ds.class_names


def affinity_step(radius: int) -> Callable[[nn.Module, Sequence[torch.Tensor], torch.device, bool],
                                           dict[str, torch.Tensor]]:
    def step(net: nn.Module, batch: Sequence[torch.Tensor], device: torch.device, amp: bool) -> dict[str, torch.Tensor]:
        img, pairs, _ = batch
        img = img.to(device, non_blocking=True)
        pairs = pairs.to(device, non_blocking=True)
        with torch.autocast(device_type=device.type, dtype=torch.float16, enabled=amp):
            feat = net(img)
        aff = pair_affinity(feat.float(), radius)  # (B, P, N)
        loss, parts = affinity_loss(aff, pairs)
        return {"loss": loss, **parts}

    return step


def train_affinity(cfg: AffinityTrainConfig, on_progress: Callable[[Progress], None] | None = None,
                   log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Train AffinityNet on (image, AffinityNet label PNG) pairs. Returns the sidecar dict."""

    def build() -> tuple[Stage, nn.Module, AffinityDataset]:
        ids, paths, labels, class_names = affinity_items(cfg)
        aug = AffinityAugmentConfig(crop=cfg.crop, flip=cfg.flip,
                                    jitter=(0.3, 0.3, 0.3, 0.1) if cfg.jitter else None, radius=cfg.radius)
        dataset = AffinityDataset(paths, labels, aug, cfg.seed)
        model = create_model("affinity", cfg.backbone)
        stage = Stage(
            kind="affinity", final_name=AFFINITY_FINAL, loss_terms=("loss", "bg", "fg", "neg"),
            step=affinity_step(cfg.radius), fingerprint=files_fingerprint(ids, labels),
            sidecar={"class_names": class_names, "radius": cfg.radius,
                     "dataset": {"root": str(cfg.data), "labels": str(cfg.labels), "num_images": len(ids)}},
        )
        return stage, model, dataset

    return train_stage(cfg, build, on_progress, log)


__all__ = ["AFFINITY_FINAL", "AffinityTrainConfig", "Stage", "StageConfig", "affinity_loss", "run_stage",
           "train_affinity", "train_stage"]
