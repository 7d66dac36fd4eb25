"""The training-loop scaffolding shared by the SEAM trainer (`trainer.py`) and the
AffinityNet / DeepLab stage loop (`stage.run_stage`).

Device + DDP set-up, seeds and determinism, the authors' frozen BatchNorm / conv1a / b2
(with data-calibrated BN statistics for random initialisation), the run's log.csv
(+ TensorBoard), exact `--resume` from RUN_DIR/checkpoint.pth, and the epoch/iteration
loop: poly-scheduled SGD with AMP scaling, windowed loss logging, per-epoch history,
`--max-minutes` / `stop_after` stops that leave a resumable checkpoint.
"""
from __future__ import annotations

import csv
import math
import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from seam.training.data.loader import make_loader
from seam.training.models.checkpoint import CheckpointError
from seam.training.models.resnet38 import freeze_batchnorm
from seam.training.trainers.schedule import PolySchedule
from seam.training.trainers.state import (
    CHECKPOINT_NAME,
    atomic_torch_save,
    bare_state_dict,
    capture_rng,
    load_resume_checkpoint,
    restore_rng,
    seed_everything,
)
from torch import nn

from seam.common.image import IMAGENET_MEAN, IMAGENET_STD

CALIBRATION_EPOCH = 1_000_000  # augmentation key of the BN calibration samples, never a training epoch


class TrainingError(RuntimeError):
    pass


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


@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def main(self) -> bool:
        return self.rank == 0

    def parallel(self, module: nn.Module) -> nn.Module:
        """`module` wrapped in DistributedDataParallel when there are several ranks."""
        if self.world == 1:
            return module
        return nn.parallel.DistributedDataParallel(module, device_ids=[self.local_rank]
                                                   if self.device.type == "cuda" else None)


def init_distributed(device: str | None) -> Dist:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    want_cuda = torch.cuda.is_available() and (device is None or device.startswith("cuda"))
    if world <= 1:
        return Dist(device=torch.device(device or ("cuda" if want_cuda else "cpu")))
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if want_cuda:
        torch.cuda.set_device(local)
        dev = torch.device("cuda", local)
    else:
        dev = torch.device("cpu")
    if not dist.is_initialized():
        dist.init_process_group("nccl" if want_cuda else "gloo")
    return Dist(rank, world, local, dev)


@contextmanager
def distributed_session(device: str | None,
                        log: Callable[[str], None] | None) -> Iterator[tuple[Dist, Callable[[str], None]]]:
    """The ranks of one training call (DDP under torchrun, else this process) and the log
    that speaks (`log`, default stderr) on rank 0 alone; the process group goes afterwards."""
    d = init_distributed(device)
    try:
        yield d, (log or stderr_log) if d.main else (lambda _m: None)
    finally:
        if d.world > 1 and dist.is_initialized():
            dist.destroy_process_group()


def all_reduce_mean(values: list[float], d: Dist) -> list[float]:
    if d.world == 1:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=d.device)
    dist.all_reduce(t)
    return (t / d.world).tolist()


def gather_rng(d: Dist) -> list[dict[str, Any]]:
    mine = capture_rng()
    if d.world == 1:
        return [mine]
    out: list[Any] = [None] * d.world
    dist.all_gather_object(out, mine)
    return out


def stderr_log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def prepare(cfg: Any, d: Dist) -> tuple[bool, int]:
    """Seeds (per rank: dropout masks differ, as on separate GPUs) and determinism;
    returns (amp, loader workers)."""
    if cfg.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
    seed_everything(cfg.seed + d.rank)
    cuda = d.device.type == "cuda"
    amp = cuda if cfg.amp is None else (cfg.amp and cuda)
    workers = cfg.workers if cfg.workers is not None else (min(8, os.cpu_count() or 1) if cuda else 0)
    return amp, workers


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
def calibrate_batchnorm(model: nn.Module, dataset: torch.utils.data.Dataset, batches: int, batch_size: int,
                        device: torch.device, seed: int) -> int:
    """Set every BN's running mean/var to statistics of `batches` augmented batches.

    For random initialisation only: frozen BN (the authors' setting) is then a fixed,
    data-calibrated standardisation, as ImageNet statistics are for the published
    runs, instead of an identity that lets activations shrink ~6x per projection block.
    `dataset[(index, epoch)]` must return the image tensor first. Uses no global RNG
    (dropout off, fixed sample keys), so seeded runs stay exact. Returns the number of
    images used.
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


def calibrate_random_init(cfg: Any, model: nn.Module, dataset: torch.utils.data.Dataset, d: Dist,
                          init_report: dict[str, Any], log: Callable[[str], None]) -> None:
    """`calibrate_batchnorm` on a fresh run without --weights (cfg.bn_calibration batches,
    default 10; 0 with --weights); the image count goes into `init_report`."""
    batches = cfg.bn_calibration if cfg.bn_calibration is not None else (0 if cfg.weights else 10)
    if not batches or cfg.resume:
        return
    n_cal = calibrate_batchnorm(model, dataset, batches, cfg.batch_size, d.device, cfg.seed)
    log(f"random initialisation: frozen BN statistics calibrated on {n_cal} augmented images")
    init_report["bn_calibration_images"] = n_cal


def open_run_dir(cfg: Any, d: Dist) -> Path:
    """RUN_DIR (created on rank 0); the global batch must split evenly over the ranks."""
    run_dir = Path(cfg.out)
    if d.main:
        run_dir.mkdir(parents=True, exist_ok=True)
    if cfg.batch_size % d.world:
        raise TrainingError(f"--batch-size {cfg.batch_size} is the global batch; it must divide by {d.world} ranks")
    return run_dir


def check_resume(ck: dict[str, Any], cfg: Any, fingerprint: str, data_changed: str) -> None:
    """A --resume must keep cfg's SCHEDULE_FIELDS and the training data's fingerprint."""
    old, new = ck.get("config", {}), cfg.to_dict()
    diffs = [f"{k}: checkpoint {old.get(k)!r}, now {new[k]!r}" for k in type(cfg).SCHEDULE_FIELDS
             if _norm(old.get(k)) != _norm(new[k])]
    if diffs:
        raise CheckpointError("--resume with different training settings: " + "; ".join(diffs))
    if ck.get("dataset_fingerprint") != fingerprint:
        raise CheckpointError(f"--resume on different data: {data_changed}")


def _norm(v: Any) -> Any:
    return list(v) if isinstance(v, (list, tuple)) else v


class RunLog:
    """log.csv (appended across resumes) and, with tensorboard=True, TensorBoard when available."""

    def __init__(self, run_dir: Path, terms: Sequence[str], enabled: bool, tensorboard: bool = False) -> None:
        self.enabled = enabled
        self.terms = tuple(terms)
        self.path = run_dir / "log.csv"
        self.tb = None
        if not enabled:
            return
        new = not self.path.is_file()
        self.file = open(self.path, "a", newline="")  # noqa: SIM115 - closed in close()
        self.writer = csv.writer(self.file)
        if new:
            self.writer.writerow(("iteration", "epoch", "lr", *self.terms, "images_per_s", "elapsed_s"))
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(str(run_dir / "tb"))
            except Exception:  # noqa: BLE001 - tensorboard is optional
                self.tb = None

    def row(self, iteration: int, epoch: int, lr: float, losses: Mapping[str, float], ips: float,
            elapsed: float) -> None:
        if not self.enabled:
            return
        self.writer.writerow([iteration, epoch, f"{lr:.6g}", *(f"{losses[k]:.6f}" for k in self.terms),
                              f"{ips:.2f}", f"{elapsed:.1f}"])
        self.file.flush()
        if self.tb is not None:
            for k in self.terms:
                self.tb.add_scalar(f"loss/{k}", losses[k], iteration)
            self.tb.add_scalar("lr", lr, iteration)
            self.tb.add_scalar("images_per_s", ips, iteration)

    def close(self) -> None:
        if self.enabled:
            self.file.close()
            if self.tb is not None:
                self.tb.close()


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


__all__ = ["CALIBRATION_EPOCH", "Dist", "Progress", "Run", "RunLog", "TrainingError", "all_reduce_mean",
           "calibrate_batchnorm", "calibrate_random_init", "check_resume", "distributed_session", "freeze_parameters",
           "gather_rng", "init_distributed", "open_run_dir", "prepare", "set_train_mode", "stderr_log"]
