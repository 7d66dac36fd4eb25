"""`Trainer`: the template every training stage fills in (SEAM `seam.py`, AffinityNet
`affinity.py`, DeepLab `deeplab.py`; a new stage is one subclass).

`Trainer.train` is the whole run, the same for every stage: validate the config, set up
the device(s) (DDP under torchrun) and seeds, `build` the model and its data, open the
run directory, initialise from --weights, freeze as the authors did, calibrate BN on a
random init, build the optimiser and its poly schedule, `--resume`, run the loop of
`run.Run`, then save RUN_DIR/<kind>_final.pth (bare state dict, the authors' key names) +
<kind>_final.json (sidecar: kind, backbone, class names, config, recipe, training
summary, loss history) and `finish` (SEAM scores its CAMs there).

A stage must give `kind`, `final_name`, `loss_terms`, `build` and `make_step`; every
other hook has the default most stages want.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Generic, TypeVar

import torch
from seam.training.data.loader import iterations_per_epoch
from seam.training.models.checkpoint import CheckpointError
from seam.training.trainers.batchnorm import calibrate_random_init, freeze_parameters, set_train_mode
from seam.training.trainers.config import RunConfig
from seam.training.trainers.distributed import Dist, distributed_session, prepare
from seam.training.trainers.recipes import describe
from seam.training.trainers.run import Progress, Run
from seam.training.trainers.run_dir import RunLog, TrainingError, check_resume, open_run_dir
from seam.training.trainers.schedule import PolySchedule, make_optimizer
from seam.training.trainers.state import initialise_stage_from, save_final, summarise_keys
from torch import nn

Log = Callable[[str], None]
OnProgress = Callable[[Progress], None]
# (batch, iteration) -> {"loss": tensor (optimised), other terms: tensors (logged)}
Step = Callable[[Any, int], Mapping[str, torch.Tensor]]
C = TypeVar("C", bound=RunConfig)


@dataclass
class Parts:
    """What `Trainer.build` makes: the model, its training data, the data's fingerprint (a
    --resume must see the same) and the stage's own sidecar entries (`class_names`, when
    there, also goes into every checkpoint)."""

    model: nn.Module
    dataset: torch.utils.data.Dataset
    fingerprint: str
    sidecar: dict[str, Any]


class Trainer(Generic[C]):
    """The training template; subclasses fill in the hooks (module docstring)."""

    kind: ClassVar[str]  # seam | affinity | deeplab: the sidecar's and the checkpoint's "kind"
    final_name: ClassVar[str]  # RUN_DIR/<this>: the final weights
    loss_terms: ClassVar[tuple[str, ...]]  # "loss" (optimised) first, then the logged parts
    tensorboard: ClassVar[bool] = False  # TensorBoard events beside log.csv
    data_changed: ClassVar[str] = "the images or labels changed"  # why a --resume refuses other data

    def __init__(self, cfg: C) -> None:
        self.cfg = cfg

    # ----------------------------------------------------------------- hooks

    def build(self, log: Log) -> Parts:
        """The model (on the CPU, freshly initialised) and its training data."""
        raise NotImplementedError

    def make_step(self, model: nn.Module, d: Dist, amp: bool) -> Step:
        """The loop's step: one batch through `model` (wrapped for DDP here) to the loss terms."""
        raise NotImplementedError

    def initialise(self, model: nn.Module, log: Log) -> dict[str, Any]:
        """--weights into `model` on a fresh run; returns the sidecar's "initialisation" entry."""
        cfg = self.cfg
        if not cfg.weights:
            log("no --weights: training from random initialisation")
            return {"source": None}
        if cfg.resume:  # the checkpoint's own record replaces it in Run.resume
            return {"source": None}
        report = initialise_stage_from(model, cfg.weights, self.kind)
        log(f"initialised from {report['source']}")
        if report["missing"]:
            log(f"  uninitialised (random) keys: {summarise_keys(report['missing'])}")
        if report["skipped_head"]:
            log(f"  head keys not taken from it: {summarise_keys(report['skipped_head'])}")
        return report

    def freeze(self, model: nn.Module) -> list[str]:
        """The authors' frozen BN / conv1a / b2; returns the frozen parameter names."""
        return freeze_parameters(model)

    def extra_params(self, model: nn.Module) -> list[nn.Parameter]:
        """Parameters trained at 10x lr without weight decay beside the four groups (new BN)."""
        return []

    def optimizer(self, model: nn.Module) -> torch.optim.Optimizer:
        """The four poly groups, plus `extra_params` at 10x lr without weight decay."""
        cfg, extra = self.cfg, self.extra_params(model)
        for p in extra:  # trained despite freeze_parameters / calibration
            p.requires_grad_(True)
        opt = make_optimizer(model, cfg.lr, cfg.weight_decay, cfg.effective_momentum)
        if extra:
            opt.add_param_group({"params": list(extra), "lr": cfg.lr * 10, "initial_lr": cfg.lr * 10,
                                 "lr_mult": 10.0, "weight_decay": 0.0, "name": "new_norm"})
        return opt

    @property
    def poly_extra(self) -> int:
        """The poly schedule runs over max_iter + this (the authors' DeepLab: 1)."""
        return 0

    def train_mode(self, model: nn.Module) -> None:
        """The modules' state at the start of every epoch: dropout on, BN frozen."""
        set_train_mode(model)

    def describe_run(self, run: Run, parts: Parts, frozen: list[str], amp: bool) -> str:
        cfg, d = self.cfg, run.d
        return (f"{self.kind}: {len(parts.dataset)} images, {run.ipe} iterations/epoch x {cfg.epochs} epochs, "
                f"global batch {cfg.batch_size} on {d.world} x {d.device.type}{' (AMP)' if amp else ''}; "
                f"{len(frozen)} frozen tensors, momentum {cfg.effective_momentum:g}")

    def finish(self, run: Run, final: Path, sidecar: dict[str, Any], on_progress: OnProgress | None,
               log: Log) -> dict[str, Any]:
        """After the final weights are saved (rank 0): more results into the sidecar."""
        return sidecar

    # ----------------------------------------------------------------- the template

    def train(self, on_progress: OnProgress | None = None, log: Log | None = None) -> dict[str, Any]:
        """Validate, train, save. Returns the sidecar dict written beside the final weights
        (rank 0; {} on the other ranks)."""
        self.cfg.validate()
        # process-wide torch settings the run changes, restored afterwards (library callers, tests)
        saved = (torch.are_deterministic_algorithms_enabled(),
                 torch.is_deterministic_algorithms_warn_only_enabled(), torch.get_num_threads())
        with distributed_session(self.cfg.device, log) as (d, say):
            try:
                return self._train(d, on_progress, say)
            finally:
                torch.use_deterministic_algorithms(saved[0], warn_only=saved[1])
                torch.set_num_threads(saved[2])

    def _train(self, d: Dist, on_progress: OnProgress | None, log: Log) -> dict[str, Any]:
        cfg = self.cfg
        amp, workers = prepare(cfg, d)
        threads = getattr(cfg, "threads", None)
        if threads:
            torch.set_num_threads(threads)  # on a shared CPU, 1 thread often beats oversubscription
        parts = self.build(log)
        run, frozen = self._start(parts, d, amp, log)
        log(self.describe_run(run, parts, frozen, amp))
        logger = RunLog(run.run_dir, self.loss_terms, d.main, tensorboard=self.tensorboard)
        stopped = run.train(parts.dataset, workers=workers, terms=self.loss_terms,
                            step=self.make_step(parts.model, d, amp), train_mode=self.train_mode, logger=logger,
                            on_progress=on_progress, log=log)
        if not d.main:
            return {}  # no barrier: rank 0 alone saves (and evaluates), the others may leave
        sidecar = run.sidecar(self.kind, parts.sidecar, stopped, run.seconds, amp)
        final = save_final(run.run_dir, parts.model, sidecar, self.final_name)
        log(f"saved {final} (+ {final.with_suffix('.json').name})")
        return self.finish(run, final, sidecar, on_progress, log)

    def _start(self, parts: Parts, d: Dist, amp: bool, log: Log) -> tuple[Run, list[str]]:
        """Initialise, freeze and place the model, build its optimiser and schedule, resume
        when asked. Returns (the run, the frozen parameter names)."""
        cfg, model, dataset = self.cfg, parts.model, parts.dataset
        run_dir = open_run_dir(cfg, d)
        log(describe(cfg))
        if len(dataset) < cfg.batch_size:
            raise TrainingError(f"{len(dataset)} training images are fewer than one batch of {cfg.batch_size}")
        ipe = iterations_per_epoch(len(dataset), cfg.batch_size)
        max_iter = ipe * cfg.epochs
        init_report = self.initialise(model, log)
        frozen = self.freeze(model)
        model.to(d.device)
        calibrate_random_init(cfg, model, dataset, d, init_report, log)
        opt = self.optimizer(model)
        if getattr(cfg, "max_iterations", None):  # iteration-counted runs: enough epochs to reach the cap
            cfg.epochs = -(-cfg.max_iterations // ipe)
            max_iter = min(max_iter, cfg.max_iterations)  # ipe * the new epochs is >= the cap
        extra = {"kind": self.kind,
                 **({"class_names": parts.sidecar["class_names"]} if "class_names" in parts.sidecar else {})}
        run = Run(cfg, d, run_dir, model, opt, PolySchedule(opt, max_iter + self.poly_extra),
                  torch.amp.GradScaler("cuda", enabled=amp), ipe, parts.fingerprint, init_report,
                  checkpoint_extra=extra)
        if cfg.resume:
            run.resume(lambda ck: self._check_resume(ck, parts.fingerprint), log)
        return run, frozen

    def _check_resume(self, ck: dict[str, Any], fingerprint: str) -> None:
        if ck.get("kind", self.kind) != self.kind:
            raise CheckpointError(f"--resume: the checkpoint is a {ck.get('kind')} run, not {self.kind}")
        check_resume(ck, self.cfg, fingerprint, self.data_changed)


__all__ = ["Parts", "Step", "Trainer"]
