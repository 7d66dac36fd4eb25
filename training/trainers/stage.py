"""The training stage loop AffinityNet (`affinity.py`) and DeepLab (`deeplab.py`) share.

A stage trainer describes its model in a `Stage` (kind, loss step, sidecar entries,
training-data fingerprint, BN handling) and hands it to `train_stage`, which sets up
the device(s) and runs `run_stage`: weight initialisation, the authors' freezing,
optimiser, `--resume`, the loop of `loop.Run`, and the final weights
RUN_DIR/<kind>_final.pth (bare state dict, the authors' key names) + <kind>_final.json
(sidecar: kind, backbone, class names, config, recipe, training summary, loss history).
"""
from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from seam.training.data.loader import iterations_per_epoch
from seam.training.models.checkpoint import CheckpointError
from seam.training.trainers import loop
from seam.training.trainers.config import RunConfig
from seam.training.trainers.loop import Dist, Progress, Run
from seam.training.trainers.recipes import describe
from seam.training.trainers.schedule import PolySchedule, make_optimizer
from seam.training.trainers.state import initialise_stage_from, save_final, summarise_keys
from torch import nn

from seam.common.options import setting

Log = Callable[[str], None]
# (net, batch, device, amp) -> {"loss": tensor, other terms: tensors}
StageStep = Callable[[nn.Module, Sequence[torch.Tensor], torch.device, bool], dict[str, torch.Tensor]]


@dataclass
class StageConfig(RunConfig):
    """Settings shared by the AffinityNet and DeepLab trainers (saved in every checkpoint);
    the subclasses add their data, `recipe` and `STAGE`."""

    jitter: bool = setting(True, recipe=True, flag=None, off="--no-jitter", help="No colour jitter.")
    out: str = setting("runs/affinity", path=True, help="Run directory.")

    SCHEDULE_FIELDS = ("backbone", "batch_size", "epochs", "lr", "weight_decay", "momentum", "authors_momentum",
                       "crop", "jitter", "seed")

    def validate(self) -> None:
        self.validate_schedule()


@dataclass
class Stage:
    """What differs between the trainers that share `run_stage`."""

    kind: str  # affinity | deeplab
    final_name: str
    loss_terms: tuple[str, ...]  # "loss" first
    step: StageStep
    sidecar: dict[str, Any]  # kind-specific sidecar entries (class_names, dataset, ...)
    fingerprint: str  # identifies the training data; a --resume must see the same
    extra_params: list[nn.Parameter] = field(default_factory=list)  # e.g. new BN (10x lr, no decay)
    train_mode: Callable[[nn.Module], None] = loop.set_train_mode
    unfreeze: bool = False  # train every conv (conv1a, b2* too), as the authors' DeepLab run; BN params stay out
    poly_extra: int = 0  # poly over max_iter + poly_extra (the authors' DeepLab: 1)


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


def initialise(cfg: StageConfig, stage: Stage, model: nn.Module, log: Log) -> dict[str, Any]:
    """--weights into `model` on a fresh run; returns the sidecar's "initialisation" entry."""
    if not cfg.weights:
        log("no --weights: training from random initialisation")
        return {"source": None}
    if cfg.resume:  # the checkpoint's own record replaces it in Run.resume
        return {"source": None}
    report = initialise_stage_from(model, cfg.weights, stage.kind)
    log(f"initialised from {report['source']}")
    if report["missing"]:
        log(f"  uninitialised (random) keys: {summarise_keys(report['missing'])}")
    if report["skipped_head"]:
        log(f"  head keys not taken from it: {summarise_keys(report['skipped_head'])}")
    return report


def freeze(stage: Stage, model: nn.Module) -> list[str]:
    """The authors' frozen BN / conv1a / b2 (every conv trainable with `stage.unfreeze`);
    returns the frozen parameter names."""
    frozen = loop.freeze_parameters(model)
    if not stage.unfreeze:
        return frozen
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            for p in m.parameters():
                p.requires_grad_(True)
    return [n for n, p in model.named_parameters() if not p.requires_grad]


def stage_optimizer(cfg: StageConfig, stage: Stage, model: nn.Module) -> torch.optim.Optimizer:
    """The four poly groups, plus `stage.extra_params` at 10x lr without weight decay."""
    for p in stage.extra_params:  # trained despite freeze_parameters / calibration
        p.requires_grad_(True)
    opt = make_optimizer(model, cfg.lr, cfg.weight_decay, cfg.effective_momentum)
    if stage.extra_params:
        opt.add_param_group({"params": list(stage.extra_params), "lr": cfg.lr * 10, "initial_lr": cfg.lr * 10,
                             "lr_mult": 10.0, "weight_decay": 0.0, "name": "new_norm"})
    return opt


def start_run(cfg: StageConfig, d: Dist, stage: Stage, model: nn.Module, dataset: torch.utils.data.Dataset,
              amp: bool, log: Log) -> tuple[Run, list[str]]:
    """Initialise, freeze and place `model`, build its optimiser and schedule, resume when asked.
    Returns (the run, the frozen parameter names)."""
    run_dir = loop.open_run_dir(cfg, d)
    log(describe(cfg))
    if len(dataset) < cfg.batch_size:
        raise loop.TrainingError(f"{len(dataset)} training images are fewer than one batch of {cfg.batch_size}")
    ipe = iterations_per_epoch(len(dataset), cfg.batch_size)
    max_iter = ipe * cfg.epochs
    init_report = initialise(cfg, stage, model, log)
    frozen = freeze(stage, model)
    model.to(d.device)
    loop.calibrate_random_init(cfg, model, dataset, d, init_report, log)  # random init: as the SEAM trainer
    opt = stage_optimizer(cfg, stage, model)
    if getattr(cfg, "max_iterations", None):  # iteration-counted runs: enough epochs to reach the cap
        cfg.epochs = -(-cfg.max_iterations // ipe)
        max_iter = min(max_iter, cfg.max_iterations)  # ipe * the new epochs is >= the cap
    extra = {"kind": stage.kind,
             **({"class_names": stage.sidecar["class_names"]} if "class_names" in stage.sidecar else {})}
    run = Run(cfg, d, run_dir, model, opt, PolySchedule(opt, max_iter + stage.poly_extra),
              torch.amp.GradScaler("cuda", enabled=amp), ipe, stage.fingerprint, init_report, checkpoint_extra=extra)
    if cfg.resume:
        run.resume(lambda ck: _check_resume(ck, cfg, stage), log)
    return run, frozen


def run_stage(cfg: StageConfig, d: Dist, stage: Stage, model: nn.Module, dataset: torch.utils.data.Dataset,
              amp: bool, workers: int, on_progress: Callable[[Progress], None] | None,
              log: Log) -> dict[str, Any]:
    """Optimise `model` on `dataset` with `stage.step`; save checkpoints and the final weights.
    Returns the sidecar dict (rank 0; {} elsewhere)."""
    run, frozen = start_run(cfg, d, stage, model, dataset, amp, log)
    log(f"{stage.kind}: {len(dataset)} images, {run.ipe} iterations/epoch x {cfg.epochs} epochs, global batch "
        f"{cfg.batch_size} on {d.world} x {d.device.type}{' (AMP)' if amp else ''}; {len(frozen)} frozen tensors, "
        f"momentum {cfg.effective_momentum:g}")
    net = d.parallel(model)
    logger = loop.RunLog(run.run_dir, stage.loss_terms, d.main)
    stopped = run.train(dataset, workers=workers, terms=stage.loss_terms,
                        step=lambda batch, _it: stage.step(net, batch, d.device, amp), train_mode=stage.train_mode,
                        logger=logger, on_progress=on_progress, log=log)
    seconds = run.seconds
    if not d.main:
        return {}
    sidecar = run.sidecar(stage.kind, stage.sidecar, stopped, seconds, amp)
    final = save_final(run.run_dir, model, sidecar, stage.final_name)
    log(f"saved {final} (+ {final.with_suffix('.json').name})")
    return sidecar


def _check_resume(ck: dict[str, Any], cfg: StageConfig, stage: Stage) -> None:
    if ck.get("kind", stage.kind) != stage.kind:
        raise CheckpointError(f"--resume: the checkpoint is a {ck.get('kind')} run, not {stage.kind}")
    loop.check_resume(ck, cfg, stage.fingerprint, "the images or labels changed")


def train_stage(cfg: StageConfig, build: Callable[[], tuple[Stage, nn.Module, torch.utils.data.Dataset]],
                on_progress: Callable[[Progress], None] | None, log: Log | None) -> dict[str, Any]:
    """Validate `cfg`, set up the device(s), `build()` the stage, model and data set, run them."""
    cfg.validate()
    with loop.distributed_session(cfg.device, log) as (d, say):
        amp, workers = loop.prepare(cfg, d)
        stage, model, dataset = build()
        return run_stage(cfg, d, stage, model, dataset, amp, workers, on_progress, say)


__all__ = ["Stage", "StageConfig", "files_fingerprint", "labelled_items", "run_stage", "train_stage"]
