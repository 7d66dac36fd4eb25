"""The ranks of a training call: DDP under torchrun (one process per GPU, `Dist`), else
this process alone; per-rank seeds and determinism (`prepare`); the few collectives the
loop needs (mean of the losses over the ranks, every rank's RNG state for a checkpoint);
a log that speaks on rank 0 only."""
from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from seam.training.trainers.state import capture_rng, seed_everything
from torch import nn


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
