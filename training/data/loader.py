"""Deterministic batching for single-process and DDP training.

The global batch of iteration i in epoch e is fixed by (seed, e): a permutation of
the data set cut into `batch_size` slices (the last partial batch dropped, as the
authors' loader). Rank r of a world of w takes its `batch_size // w` share of that
global batch, so the images seen per step do not depend on the GPU count, and a
resumed run can skip the batches it has already done.
"""
from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
from seam.training.data.augment import AugmentedDataset
from torch.utils.data import DataLoader, Sampler


def epoch_permutation(n: int, seed: int, epoch: int) -> np.ndarray:
    return np.random.default_rng([seed, 1_000_003, epoch]).permutation(n)


def iterations_per_epoch(n: int, batch_size: int) -> int:
    return n // batch_size


class EpochBatchSampler(Sampler[list[tuple[int, int]]]):
    """Yields this rank's share of each global batch as [(index, epoch), ...]."""

    def __init__(self, n: int, batch_size: int, seed: int, epoch: int, rank: int = 0, world: int = 1,
                 start_batch: int = 0) -> None:
        if batch_size % world:
            raise ValueError(f"batch size {batch_size} is not divisible by the world size {world}")
        if n < batch_size:
            raise ValueError(f"{n} images are fewer than one batch of {batch_size}")
        self.n, self.batch, self.seed, self.epoch = n, batch_size, seed, epoch
        self.rank, self.world, self.start = rank, world, start_batch

    def __len__(self) -> int:
        return iterations_per_epoch(self.n, self.batch) - self.start

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        perm = epoch_permutation(self.n, self.seed, self.epoch)
        per_rank = self.batch // self.world
        for b in range(self.start, iterations_per_epoch(self.n, self.batch)):
            glob = perm[b * self.batch:(b + 1) * self.batch]
            share = glob[self.rank * per_rank:(self.rank + 1) * per_rank]
            yield [(int(i), self.epoch) for i in share]


def make_loader(dataset: AugmentedDataset, batch_size: int, epoch: int, *, rank: int = 0, world: int = 1,
                start_batch: int = 0, workers: int = 0, pin_memory: bool = False) -> DataLoader:
    """One epoch's DataLoader. Its own torch.Generator keeps worker seeding from consuming
    the global RNG (which dropout uses), so resumed runs replay the same dropout masks."""
    sampler = EpochBatchSampler(len(dataset), batch_size, dataset.seed, epoch, rank, world, start_batch)
    gen = torch.Generator().manual_seed(dataset.seed * 7919 + epoch)
    return DataLoader(dataset, batch_sampler=sampler, num_workers=workers, pin_memory=pin_memory,
                      generator=gen, persistent_workers=False)
