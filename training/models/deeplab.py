"""DeepLab-LargeFOV head on ResNet-38 for the last SEAM stage (retraining on pseudo labels).

Subclasses the backbone (like SEAM and AffinityNet) so one checkpoint format covers
all three: backbone keys are the authors', the head adds `fc6` (3x3, dilation 12),
`bn_fc6`, `fc7` (1x1), `bn_fc7` and `classifier` (1x1 with bias).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from training.models.resnet38 import ResNet38, ResNet38Config

HEAD_CHANNELS = 512
DILATION = 12


class DeepLabLargeFOV(ResNet38):
    def __init__(self, num_classes: int = 21, backbone: ResNet38Config = ResNet38Config(),
                 dropout: float = 0.5) -> None:
        """num_classes includes background (channel 0)."""
        super().__init__(backbone)
        self.num_classes = num_classes
        c6 = backbone.feature_channels["conv6"]
        self.fc6 = nn.Conv2d(c6, HEAD_CHANNELS, 3, padding=DILATION, dilation=DILATION, bias=False)
        self.bn_fc6 = nn.BatchNorm2d(HEAD_CHANNELS)
        self.fc7 = nn.Conv2d(HEAD_CHANNELS, HEAD_CHANNELS, 1, bias=False)
        self.bn_fc7 = nn.BatchNorm2d(HEAD_CHANNELS)
        self.dropout = nn.Dropout2d(dropout)
        self.classifier = nn.Conv2d(HEAD_CHANNELS, num_classes, 1, bias=True)
        for m in (self.fc6, self.fc7):
            nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
        nn.init.normal_(self.classifier.weight, std=0.01)
        nn.init.zeros_(self.classifier.bias)

    def new_modules(self) -> list[nn.Module]:
        return [self.fc6, self.bn_fc6, self.fc7, self.bn_fc7, self.classifier]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> logits (B, num_classes, h, w) at stride 8."""
        f = self.forward_features(x)["conv6"]
        f = F.relu(self.bn_fc6(self.fc6(f)))
        f = F.relu(self.bn_fc7(self.fc7(f)))
        return self.classifier(self.dropout(f))
