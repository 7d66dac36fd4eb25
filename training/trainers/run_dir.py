"""A run directory: created on rank 0, its log.csv (+ TensorBoard), and the checks that a
`--resume` from its checkpoint.pth continues the same run (settings and data)."""
from __future__ import annotations

import csv
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from seam.training.models.checkpoint import CheckpointError
from seam.training.trainers.distributed import Dist


class TrainingError(RuntimeError):
    pass


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
