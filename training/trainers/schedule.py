"""The authors' optimiser set-up: four parameter groups and poly learning-rate decay.

Groups (train_SEAM.py / get_parameter_groups): pretrained conv weights (1x lr,
weight decay), pretrained biases (2x, no decay), new layers' weights (10x, decay),
new layers' biases (20x, no decay). Every conv of ResNet-38 and the SEAM head is
bias-free, so groups 1 and 3 are empty there; they exist for heads that have biases.
Frozen parameters (BN, conv1a, b2*) are left out.

lr(i) = lr_group * (1 - i / max_iter) ** 0.9, set before optimiser step i
(i = 0 .. max_iter - 1), as the release's PolyOptimizer.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

LR_MULTS: tuple[float, float, float, float] = (1.0, 2.0, 10.0, 20.0)
GROUP_NAMES = ("pretrained_weight", "pretrained_bias", "new_weight", "new_bias")
POLY_POWER = 0.9
AUTHORS_MOMENTUM = 5e-4  # what the release's positional-argument slip actually passed to SGD


def param_groups(model: nn.Module, lr: float, weight_decay: float,
                 new_modules: list[nn.Module] | None = None) -> list[dict]:
    """The four groups. `new_modules`: layers trained from scratch (model.new_modules())."""
    if new_modules is None:
        new_modules = model.new_modules() if hasattr(model, "new_modules") else []
    new_ids = {id(m) for nm in new_modules for m in nm.modules()}
    groups: list[list[nn.Parameter]] = [[], [], [], []]
    for m in model.modules():
        if not isinstance(m, (nn.Conv2d, nn.Linear, nn.GroupNorm)):
            continue
        base = 2 if id(m) in new_ids else 0
        if m.weight is not None and m.weight.requires_grad:
            groups[base].append(m.weight)
        if m.bias is not None and m.bias.requires_grad:
            groups[base + 1].append(m.bias)
    return [
        {"params": params, "lr": lr * mult, "initial_lr": lr * mult, "lr_mult": mult,
         "weight_decay": weight_decay if i % 2 == 0 else 0.0, "name": GROUP_NAMES[i]}
        for i, (params, mult) in enumerate(zip(groups, LR_MULTS, strict=True))
    ]


def poly_factor(iteration: int, max_iter: int, power: float = POLY_POWER) -> float:
    """(1 - i / max_iter) ** power, held at its last value past the end (as the release)."""
    i = min(iteration, max_iter - 1)
    return (1.0 - i / max_iter) ** power


@dataclass
class PolySchedule:
    optimizer: torch.optim.Optimizer
    max_iter: int
    power: float = POLY_POWER

    def step(self, iteration: int) -> list[float]:
        """Set every group's lr for optimiser step `iteration`; returns the lrs."""
        f = poly_factor(iteration, self.max_iter, self.power)
        for g in self.optimizer.param_groups:
            g["lr"] = g["initial_lr"] * f
        return [g["lr"] for g in self.optimizer.param_groups]


def make_optimizer(model: nn.Module, lr: float, weight_decay: float, momentum: float) -> torch.optim.SGD:
    """SGD over the four groups. Empty groups are kept so group indices stay meaningful."""
    return torch.optim.SGD(param_groups(model, lr, weight_decay), lr=lr, momentum=momentum,
                           weight_decay=weight_decay)
