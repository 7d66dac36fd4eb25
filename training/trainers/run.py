"""One optimisation run (`Run`): the epoch/iteration loop every trainer shares.

Poly-scheduled SGD with AMP scaling, windowed loss logging (log.csv, TensorBoard),
per-epoch history, exact `--resume` from RUN_DIR/checkpoint.pth, `--max-minutes` /
`stop_after` stops that leave a resumable checkpoint, and the final sidecar's common part.
"""
from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from seam.training.data.loader import make_loader
from seam.training.trainers.distributed import Dist, all_reduce_mean, gather_rng
from seam.training.trainers.run_dir import RunLog, TrainingError
from seam.training.trainers.schedule import PolySchedule
from seam.training.trainers.state import (
    CHECKPOINT_NAME,
    atomic_torch_save,
    bare_state_dict,
    load_resume_checkpoint,
    restore_rng,
)
from torch import nn

from seam.common.image import IMAGENET_MEAN, IMAGENET_STD


@dataclass
class Progress:
    """What the trainers report after every iteration (rank 0)."""

    iteration: int
    max_iter: int
    epoch: int
    epochs: int
    losses: dict[str, float]
    images_per_s: float
    lr: float
    phase: str = "train"
    extra: dict[str, Any] = field(default_factory=dict)


class LossWindow:
    """The loss terms since the last log.csv row, and the throughput over them."""

    def __init__(self, terms: Sequence[str]) -> None:
        self.terms = tuple(terms)
        self.images_per_s = 0.0
        self._reset(time.time())

    def _reset(self, now: float) -> None:
        self.sums = dict.fromkeys(self.terms, 0.0)
        self.n = 0
        self.t0 = now  # when the window opened

    def add(self, vals: Mapping[str, float]) -> None:
        for k in self.terms:
            self.sums[k] += vals[k]
        self.n += 1

    def flush(self, d: Dist, batch_size: int) -> dict[str, float]:
        """The window's mean losses over every rank; opens the next window (at `t0`)."""
        means = all_reduce_mean([self.sums[k] / self.n for k in self.terms], d)
        now = time.time()
        self.images_per_s = batch_size * self.n / max(now - self.t0, 1e-9)
        self._reset(now)
        return dict(zip(self.terms, means, strict=True))


@dataclass
class Run:
    """One optimisation run: the model, its optimiser state and where the loop stands."""

    cfg: Any  # TrainConfig or StageConfig
    d: Dist
    run_dir: Path
    model: nn.Module
    opt: torch.optim.Optimizer
    sched: PolySchedule
    scaler: torch.amp.GradScaler
    ipe: int  # iterations per epoch
    fingerprint: str
    init_report: dict[str, Any]
    checkpoint_extra: dict[str, Any] = field(default_factory=dict)  # kind-specific checkpoint entries
    start_epoch: int = 0
    start_batch: int = 0
    iteration: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    elapsed_before: float = 0.0
    t_start: float = field(default_factory=time.time)

    @property
    def max_iter(self) -> int:
        """Epochs x iterations per epoch, capped by the config's `max_iterations` when it has one
        (the authors' DeepLab runs count iterations: 20000 at batch 10)."""
        cap = getattr(self.cfg, "max_iterations", None)
        full = self.ipe * self.cfg.epochs
        return min(full, cap) if cap else full

    def resume(self, check: Callable[[dict[str, Any]], None], log: Callable[[str], None]) -> None:
        """Load RUN_DIR/checkpoint.pth (after `check` accepts it) and continue where it stopped."""
        path = self.run_dir / CHECKPOINT_NAME
        ck = load_resume_checkpoint(path)
        check(ck)
        self.model.load_state_dict(ck["model"])
        self.opt.load_state_dict(ck["optimizer"])
        if ck.get("scaler"):
            self.scaler.load_state_dict(ck["scaler"])
        self.start_epoch, self.start_batch, self.iteration = ck["epoch"], ck["batch_in_epoch"], ck["iteration"]
        self.history, self.elapsed_before = list(ck.get("history", [])), float(ck.get("elapsed_s", 0.0))
        self.init_report = ck.get("initialisation", self.init_report)
        rng = ck["rng"]
        restore_rng(rng[self.d.rank] if self.d.rank < len(rng) else rng[0])
        log(f"resumed from {path} at epoch {self.start_epoch}, iteration {self.iteration}/{self.max_iter}")

    def checkpoint(self, epoch: int, batch_in_epoch: int) -> None:
        rng = gather_rng(self.d)
        if self.d.main:
            atomic_torch_save({
                "model": bare_state_dict(self.model), "optimizer": self.opt.state_dict(),
                "scaler": self.scaler.state_dict(), "epoch": epoch, "batch_in_epoch": batch_in_epoch,
                "iteration": self.iteration, "max_iter": self.max_iter, "rng": rng, "config": self.cfg.to_dict(),
                "dataset_fingerprint": self.fingerprint, "backbone": self.cfg.backbone, "history": self.history,
                "elapsed_s": self.elapsed_before + (time.time() - self.t_start),
                "initialisation": self.init_report, **self.checkpoint_extra,
            }, self.run_dir / CHECKPOINT_NAME)
        if self.d.world > 1:
            dist.barrier()

    def train(self, dataset: torch.utils.data.Dataset, *, workers: int, terms: Sequence[str],
              step: Callable[[Any, int], Mapping[str, torch.Tensor]], train_mode: Callable[[nn.Module], None],
              logger: RunLog, on_progress: Callable[[Progress], None] | None,
              log: Callable[[str], None]) -> str | None:
        """The epochs from where the run stands; `step(batch, iteration)` returns the loss terms
        ("loss" is optimised). Returns why it stopped early (None: all epochs done)."""
        cfg, d = self.cfg, self.d
        self.t_start = time.time()
        window = LossWindow(terms)
        first_iteration = self.iteration
        stopped: str | None = None
        for epoch in range(self.start_epoch, cfg.epochs):
            first = self.start_batch if epoch == self.start_epoch else 0
            loader = make_loader(dataset, cfg.batch_size, epoch, rank=d.rank, world=d.world, start_batch=first,
                                 workers=workers, pin_memory=d.device.type == "cuda")
            train_mode(self.model)
            stopped, batches, sums = self._epoch(epoch, first, loader, step, window, logger, on_progress,
                                                 first_iteration)
            if batches:
                self._record_epoch(epoch, first, batches, sums, log)
            if stopped is None or first + batches >= self.ipe:
                self.checkpoint(epoch + 1, 0)
            if stopped:
                log(f"stopped ({stopped}) at iteration {self.iteration}/{self.max_iter}; continue with --resume")
                break
            if self.iteration >= self.max_iter:
                break
        logger.close()
        return stopped

    def _epoch(self, epoch: int, first: int, loader: Iterable[Any],
               step: Callable[[Any, int], Mapping[str, torch.Tensor]], window: LossWindow, logger: RunLog,
               on_progress: Callable[[Progress], None] | None,
               first_iteration: int) -> tuple[str | None, int, dict[str, float]]:
        """The batches of `epoch` from batch `first`. Returns (why it stopped early or None,
        batches run, per-term loss sums over them)."""
        cfg, d, max_iter = self.cfg, self.d, self.max_iter
        sums = dict.fromkeys(window.terms, 0.0)
        batches = 0
        for batch in loader:
            lr = self.sched.step(self.iteration)[0]
            vals = self._optimise(step, batch, window.terms)
            batches += 1
            for k in window.terms:
                sums[k] += vals[k]
            window.add(vals)
            if self.iteration % cfg.log_every == 0 or self.iteration == max_iter:
                means = window.flush(d, cfg.batch_size)
                logger.row(self.iteration, epoch, lr, means, window.images_per_s,
                           self.elapsed_before + window.t0 - self.t_start)
            if on_progress is not None and d.main:
                on_progress(Progress(self.iteration, max_iter, epoch, cfg.epochs, vals, window.images_per_s, lr))
            stopped = self._stop_reason(self.iteration - first_iteration)
            if stopped:
                if first + batches < self.ipe:  # mid-epoch: the end-of-epoch checkpoint will not be written
                    self.checkpoint(epoch, first + batches)
                return stopped, batches, sums
            if self.iteration >= max_iter:  # an iteration cap inside the last epoch
                break
        return None, batches, sums

    def _optimise(self, step: Callable[[Any, int], Mapping[str, torch.Tensor]], batch: Any,
                  terms: Sequence[str]) -> dict[str, float]:
        """One SGD step on `batch`; returns the loss terms as floats."""
        losses = step(batch, self.iteration)
        self.opt.zero_grad(set_to_none=True)
        self.scaler.scale(losses["loss"]).backward()
        self.scaler.step(self.opt)
        self.scaler.update()
        self.iteration += 1
        vals = {k: float(losses[k].detach()) for k in terms}
        if not math.isfinite(vals["loss"]):
            raise TrainingError(f"loss is {vals['loss']} at iteration {self.iteration}; lower --lr or disable --amp")
        return vals

    def _stop_reason(self, done_here: int) -> str | None:
        """"max_minutes" or "stop_after" when this invocation must stop now, agreed by every rank."""
        cfg, d = self.cfg, self.d
        over_time = cfg.max_minutes is not None and (time.time() - self.t_start) > cfg.max_minutes * 60
        if d.world > 1:  # every rank must stop at the same step
            flag = torch.tensor([float(over_time)], device=d.device)
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
            over_time = bool(flag.item())
        if over_time:
            return "max_minutes"
        if cfg.stop_after is not None and done_here >= cfg.stop_after:
            return "stop_after"
        return None

    def _record_epoch(self, epoch: int, first: int, batches: int, sums: Mapping[str, float],
                      log: Callable[[str], None]) -> None:
        """Append the epoch's mean losses (over every rank) to the history and the log."""
        terms = list(sums)
        means = all_reduce_mean([sums[k] / batches for k in terms], self.d)
        if epoch == self.start_epoch and first > 0 and self.history and self.history[-1]["epoch"] == epoch:
            self.history.pop()  # a resumed partial epoch replaces its partial record
        self.history.append({"epoch": epoch, "iterations": batches + first, **dict(zip(terms, means, strict=True))})
        log(f"epoch {epoch + 1}/{self.cfg.epochs}: "
            + " ".join(f"{k} {v:.4f}" for k, v in zip(terms, means, strict=True)))

    @property
    def seconds(self) -> float:
        """Training wall time over all invocations (after `train`)."""
        return self.elapsed_before + time.time() - self.t_start

    def summary(self, stopped: str | None, seconds: float, amp: bool) -> dict[str, Any]:
        """The sidecar's "training" entry."""
        cfg, d = self.cfg, self.d
        return {"iterations": self.iteration, "max_iter": self.max_iter, "completed": self.iteration >= self.max_iter,
                "stopped": stopped, "seconds": round(seconds, 1),
                "images_per_s": round(self.iteration * cfg.batch_size / max(seconds, 1e-9), 2),
                "world_size": d.world, "device": d.device.type, "amp": amp,
                "momentum": cfg.effective_momentum, "initialisation": self.init_report, "torch": torch.__version__}

    def sidecar(self, kind: str, specifics: Mapping[str, Any], stopped: str | None, seconds: float,
                amp: bool) -> dict[str, Any]:
        """The final weights' JSON sidecar: `specifics` (class names, data set, ...) among what
        every trainer records (input normalisation, config, recipe, training summary, losses)."""
        cfg = self.cfg
        return {
            "kind": kind,
            "backbone": cfg.backbone,
            **specifics,
            "normalization": {"mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD)},
            "dataset_fingerprint": self.fingerprint,
            "config": cfg.to_dict(),
            "recipe": cfg.recipe_report(),
            "training": self.summary(stopped, seconds, amp),
            "metrics": {"history": self.history, "final": self.history[-1] if self.history else None},
        }
