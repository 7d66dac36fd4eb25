"""The training-loop scaffolding shared by the SEAM trainer (`trainer.py`) and the
AffinityNet / DeepLab stage loop (`affinity.run_stage`).

Device + DDP set-up, seeds and determinism, the run's log.csv (+ TensorBoard), exact
`--resume` from RUN_DIR/checkpoint.pth, and the epoch/iteration loop: poly-scheduled
SGD with AMP scaling, windowed loss logging, per-epoch history, `--max-minutes` /
`stop_after` stops that leave a resumable checkpoint.
"""
from __future__ import annotations

import csv
import math
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from training.data.loader import make_loader
from training.engine.schedule import PolySchedule
from training.engine.state import (
    CHECKPOINT_NAME,
    atomic_torch_save,
    bare_state_dict,
    capture_rng,
    load_resume_checkpoint,
    restore_rng,
    seed_everything,
)
from training.models.checkpoint import CheckpointError


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

    def train(self, dataset: torch.utils.data.Dataset, workers: int, terms: Sequence[str],
              step: Callable[[Any, int], Mapping[str, torch.Tensor]], train_mode: Callable[[nn.Module], None],
              logger: RunLog, on_progress: Callable[[Progress], None] | None,
              log: Callable[[str], None]) -> str | None:
        """The epochs from where the run stands; `step(batch, iteration)` returns the loss terms
        ("loss" is optimised). Returns why it stopped early (None: all epochs done)."""
        cfg, d = self.cfg, self.d
        cuda = d.device.type == "cuda"
        max_iter = self.max_iter
        self.t_start = time.time()
        stopped: str | None = None
        done_here = 0
        window = dict.fromkeys(terms, 0.0)
        window_n, window_t, ips = 0, time.time(), 0.0
        for epoch in range(self.start_epoch, cfg.epochs):
            first = self.start_batch if epoch == self.start_epoch else 0
            loader = make_loader(dataset, cfg.batch_size, epoch, rank=d.rank, world=d.world, start_batch=first,
                                 workers=workers, pin_memory=cuda)
            train_mode(self.model)
            sums = dict.fromkeys(terms, 0.0)
            n_in_epoch = 0
            b = first - 1
            for b, batch in enumerate(loader, start=first):
                lr = self.sched.step(self.iteration)[0]
                losses = step(batch, self.iteration)
                self.opt.zero_grad(set_to_none=True)
                self.scaler.scale(losses["loss"]).backward()
                self.scaler.step(self.opt)
                self.scaler.update()
                self.iteration += 1
                done_here += 1
                n_in_epoch += 1
                vals = {k: float(losses[k].detach()) for k in terms}
                if not math.isfinite(vals["loss"]):
                    raise TrainingError(f"loss is {vals['loss']} at iteration {self.iteration}; "
                                        "lower --lr or disable --amp")
                for k in terms:
                    sums[k] += vals[k]
                    window[k] += vals[k]
                window_n += 1
                if self.iteration % cfg.log_every == 0 or self.iteration == max_iter:
                    avg = dict(zip(terms, all_reduce_mean([window[k] / window_n for k in terms], d), strict=True))
                    now = time.time()
                    ips = cfg.batch_size * window_n / max(now - window_t, 1e-9)
                    logger.row(self.iteration, epoch, lr, avg, ips, self.elapsed_before + now - self.t_start)
                    window = dict.fromkeys(terms, 0.0)
                    window_n, window_t = 0, now
                if on_progress is not None and d.main:
                    on_progress(Progress(self.iteration, max_iter, epoch, cfg.epochs, vals, ips, lr))
                over_time = cfg.max_minutes is not None and (time.time() - self.t_start) > cfg.max_minutes * 60
                if d.world > 1:  # every rank must stop at the same step
                    flag = torch.tensor([float(over_time)], device=d.device)
                    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
                    over_time = bool(flag.item())
                if over_time or (cfg.stop_after is not None and done_here >= cfg.stop_after):
                    stopped = "max_minutes" if over_time else "stop_after"
                    if b + 1 < self.ipe:
                        self.checkpoint(epoch, b + 1)
                    break
                if self.iteration >= max_iter:  # an iteration cap inside the last epoch
                    break
            if n_in_epoch:
                means = all_reduce_mean([sums[k] / n_in_epoch for k in terms], d)
                if epoch == self.start_epoch and first > 0 and self.history and self.history[-1]["epoch"] == epoch:
                    self.history.pop()  # a resumed partial epoch replaces its partial record
                self.history.append({"epoch": epoch, "iterations": n_in_epoch + first,
                                     **dict(zip(terms, means, strict=True))})
                log(f"epoch {epoch + 1}/{cfg.epochs}: "
                    + " ".join(f"{k} {v:.4f}" for k, v in zip(terms, means, strict=True)))
            if stopped is None or b + 1 >= self.ipe:
                self.checkpoint(epoch + 1, 0)
            if stopped:
                log(f"stopped ({stopped}) at iteration {self.iteration}/{max_iter}; continue with --resume")
                break
            if self.iteration >= max_iter:
                break
        logger.close()
        return stopped

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


__all__ = ["Dist", "Progress", "Run", "RunLog", "TrainingError", "all_reduce_mean", "check_resume", "gather_rng",
           "init_distributed", "open_run_dir", "prepare", "stderr_log"]
