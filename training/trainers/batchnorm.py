"""The authors' frozen BatchNorm / conv1a / b2 (every stage of the release trains with
them), and data-calibrated BN statistics for runs from random initialisation."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from seam.training.models.resnet38 import freeze_batchnorm
from seam.training.trainers.distributed import Dist
from torch import nn

CALIBRATION_EPOCH = 1_000_000  # augmentation key of the BN calibration samples, never a training epoch


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
