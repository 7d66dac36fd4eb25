"""ResNet-38 ("resnet38d", Wu et al.) with output stride 8, module names as in the
authors' release so their checkpoints load with strict=True.

`ResNet38Config.width` and `.depths` give the small CPU variant the same module
names and heads at a fraction of the size.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


class ResBlock(nn.Module):
    """Pre-activation basic block: BN-ReLU -> 3x3 -> BN-ReLU -> 3x3, plus shortcut."""

    def __init__(self, in_ch: int, mid_ch: int, out_ch: int, stride: int = 1,
                 first_dilation: int | None = None, dilation: int = 1) -> None:
        super().__init__()
        first_dilation = dilation if first_dilation is None else first_dilation
        self.same_shape = in_ch == out_ch and stride == 1
        self.bn_branch2a = nn.BatchNorm2d(in_ch)
        self.conv_branch2a = nn.Conv2d(in_ch, mid_ch, 3, stride, padding=first_dilation,
                                       dilation=first_dilation, bias=False)
        self.bn_branch2b1 = nn.BatchNorm2d(mid_ch)
        self.conv_branch2b1 = nn.Conv2d(mid_ch, out_ch, 3, padding=dilation, dilation=dilation, bias=False)
        if not self.same_shape:
            self.conv_branch1 = nn.Conv2d(in_ch, out_ch, 1, stride, bias=False)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns (output, bn-relu'd input): the latter feeds the SEAM/AffinityNet heads."""
        t = F.relu(self.bn_branch2a(x))
        shortcut = x if self.same_shape else self.conv_branch1(t)
        y = self.conv_branch2b1(F.relu(self.bn_branch2b1(self.conv_branch2a(t))))
        return shortcut + y, t


class ResBlockBottleneck(nn.Module):
    """The authors' `ResBlock_bot`: 1x1 -> 3x3 (dilated) -> 1x1 with dropout before the last two."""

    def __init__(self, in_ch: int, out_ch: int, stride: int = 1, dilation: int = 1, dropout: float = 0.0) -> None:
        super().__init__()
        self.bn_branch2a = nn.BatchNorm2d(in_ch)
        self.conv_branch2a = nn.Conv2d(in_ch, out_ch // 4, 1, stride, bias=False)
        self.bn_branch2b1 = nn.BatchNorm2d(out_ch // 4)
        self.dropout_2b1 = nn.Dropout2d(dropout)
        self.conv_branch2b1 = nn.Conv2d(out_ch // 4, out_ch // 2, 3, padding=dilation, dilation=dilation, bias=False)
        self.bn_branch2b2 = nn.BatchNorm2d(out_ch // 2)
        self.dropout_2b2 = nn.Dropout2d(dropout)
        self.conv_branch2b2 = nn.Conv2d(out_ch // 2, out_ch, 1, bias=False)
        self.conv_branch1 = nn.Conv2d(in_ch, out_ch, 1, stride, bias=False)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        t = F.relu(self.bn_branch2a(x))
        shortcut = self.conv_branch1(t)
        y = self.conv_branch2a(t)
        y = self.conv_branch2b1(self.dropout_2b1(F.relu(self.bn_branch2b1(y))))
        y = self.conv_branch2b2(self.dropout_2b2(F.relu(self.bn_branch2b2(y))))
        return shortcut + y, t


@dataclass(frozen=True)
class ResNet38Config:
    width: float = 1.0  # channel multiplier; 1.0 = the published network
    depths: tuple[int, int, int, int] = (3, 3, 6, 3)  # blocks in b2, b3, b4, b5

    def ch(self, n: int) -> int:
        return max(4, int(round(n * self.width)))

    @property
    def feature_channels(self) -> dict[str, int]:
        return {"conv3": self.ch(256), "conv4": self.ch(512), "conv5": self.ch(1024), "conv6": self.ch(4096)}


class ResNet38(nn.Module):
    """Backbone. `forward_features` returns the named features the heads use:
    conv3 (b4's bn-relu input), conv4 (b5's), conv5 (b6's), conv6 = relu(bn7(b7))."""

    def __init__(self, cfg: ResNet38Config = ResNet38Config()) -> None:
        super().__init__()
        self.cfg = cfg
        c = cfg.ch
        d2, d3, d4, d5 = cfg.depths
        self.conv1a = nn.Conv2d(3, c(64), 3, padding=1, bias=False)
        self.b2 = ResBlock(c(64), c(128), c(128), stride=2)
        for i in range(1, d2):
            self.add_module(f"b2_{i}", ResBlock(c(128), c(128), c(128)))
        self.b3 = ResBlock(c(128), c(256), c(256), stride=2)
        for i in range(1, d3):
            self.add_module(f"b3_{i}", ResBlock(c(256), c(256), c(256)))
        self.b4 = ResBlock(c(256), c(512), c(512), stride=2)
        for i in range(1, d4):
            self.add_module(f"b4_{i}", ResBlock(c(512), c(512), c(512)))
        self.b5 = ResBlock(c(512), c(512), c(1024), stride=1, first_dilation=1, dilation=2)
        for i in range(1, d5):
            self.add_module(f"b5_{i}", ResBlock(c(1024), c(512), c(1024), dilation=2))
        self.b6 = ResBlockBottleneck(c(1024), c(2048), dilation=4, dropout=0.3)
        self.b7 = ResBlockBottleneck(c(2048), c(4096), dilation=4, dropout=0.5)
        self.bn7 = nn.BatchNorm2d(c(4096))
        self._stages = [["b2", *[f"b2_{i}" for i in range(1, d2)]],
                        ["b3", *[f"b3_{i}" for i in range(1, d3)]],
                        ["b4", *[f"b4_{i}" for i in range(1, d4)]],
                        ["b5", *[f"b5_{i}" for i in range(1, d5)]]]

    def forward_features(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        feats: dict[str, torch.Tensor] = {}
        x = self.conv1a(x)
        for stage, names in zip(("conv1", "conv2", "conv3", "conv4"), self._stages):
            for j, name in enumerate(names):
                x, t = getattr(self, name)(x)
                if j == 0 and stage in ("conv3", "conv4"):
                    feats[stage] = t  # bn-relu input of b4 / b5
        x, feats["conv5"] = self.b6(x)
        x, _ = self.b7(x)
        feats["conv6"] = F.relu(self.bn7(x))
        return feats

    def frozen_prefixes(self) -> tuple[str, ...]:
        """Parameters the authors never train: conv1a and the b2 stage."""
        return ("conv1a.", *[f"{n}." for n in self._stages[0]])


def freeze_batchnorm(module: nn.Module) -> None:
    """BN in eval mode with frozen affine parameters (the authors' training setting)."""
    for m in module.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.eval()
            for p in m.parameters():
                p.requires_grad_(False)
