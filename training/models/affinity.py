"""AffinityNet (Ahn & Kwak, CVPR 2018) on ResNet-38, as the authors' `resnet38_aff`.

Subclasses the backbone so the state-dict keys are the authors': `f8_3` conv4->64,
`f8_4` conv5->128, `f8_5` conv6->256, `f9` 448->448, all 1x1 without bias.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from seam.common.random_walk import DEFAULT_RADIUS, source_windows
from seam.training.models.resnet38 import ResNet38, ResNet38Config

FEATURE_DIM = 448  # 64 + 128 + 256


class AffinityNet(ResNet38):
    def __init__(self, backbone: ResNet38Config = ResNet38Config()) -> None:
        super().__init__(backbone)
        fc = backbone.feature_channels
        self.f8_3 = nn.Conv2d(fc["conv4"], 64, 1, bias=False)
        self.f8_4 = nn.Conv2d(fc["conv5"], 128, 1, bias=False)
        self.f8_5 = nn.Conv2d(fc["conv6"], 256, 1, bias=False)
        self.f9 = nn.Conv2d(FEATURE_DIM, FEATURE_DIM, 1, bias=False)
        for m in (self.f8_3, self.f8_4, self.f8_5):
            nn.init.kaiming_normal_(m.weight)
        nn.init.xavier_uniform_(self.f9.weight, gain=4)

    def new_modules(self) -> list[nn.Module]:
        return [self.f8_3, self.f8_4, self.f8_5, self.f9]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> affinity features (B, 448, h, w) at stride 8."""
        d = self.forward_features(x)
        f = torch.cat([
            F.elu(self.f8_3(d["conv4"])),
            F.elu(self.f8_4(d["conv5"])),
            F.elu(self.f8_5(d["conv6"])),
        ], dim=1)
        return F.elu(self.f9(f))


def pair_affinity(feat: torch.Tensor, radius: int = DEFAULT_RADIUS) -> torch.Tensor:
    """exp(-mean_channel |f_i - f_j|) for the authors' pairs (see `seam.common.random_walk`).

    feat (B, D, h, w) -> (B, P, N): P offsets x N source pixels (the release's cropped
    window, the same for every offset), in the order of `affinity_labels.pair_labels`.
    """
    B, D, h, w = feat.shape
    wins = source_windows(h, w, radius, full=False)
    if not wins:
        raise ValueError(f"feature map {h}x{w} is too small for radius {radius}")
    _, _, y0, y1, x0, x1 = wins[0]
    src = feat[:, :, y0:y1, x0:x1]
    out = [torch.abs(src - feat[:, :, y0 + dy:y1 + dy, x0 + dx:x1 + dx]).mean(dim=1).flatten(1)
           for dy, dx, *_ in wins]
    return torch.exp(-torch.stack(out, dim=1))  # (B, P, N)
