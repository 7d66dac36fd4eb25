"""DeepLab-LargeFOV head on ResNet-38 for the last SEAM stage (retraining on pseudo labels).

The authors ran this stage with `deeplabv1` of YudeWang/semantic-segmentation-codebase
(experiment/seamv1-pseudovoc, lib/net/deeplabv1.py): backbone -> conv_fov (3x3,
dilation 12, 4096->512, no bias) -> BN (momentum 3e-4) -> relu -> conv_fov2 (1x1) -> BN
-> relu -> Dropout(0.5) (element-wise) -> cls_conv (1x1 with bias); new convs
kaiming-normal (fan_out, relu), BN weight 1 / bias 0; logits upsampled to the input
(bilinear, align_corners=True) inside their forward.

Ours subclasses the backbone (like SEAM and AffinityNet) so one checkpoint format covers
all three: backbone keys without a prefix, head `fc6`, `bn_fc6`, `fc7`, `bn_fc7`,
`classifier`, and returns the stride-8 logits (the callers upsample).
`from_authors_state_dict` renames their checkpoint's keys (`backbone.*`, `conv_fov`, ...)
to ours, so their released model (deeplabv1_resnet38_..._64.754.pth) loads strictly.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from seam.training.models.resnet38 import ResNet38, ResNet38Config

HEAD_CHANNELS = 512
DILATION = 12
BN_MOMENTUM = 3e-4  # their TRAIN_BN_MOM (torch convention: weight of the new batch statistic)

# their deeplabv1 module names -> ours (the backbone's keys only lose the "backbone." prefix)
AUTHORS_HEAD = {"conv_fov.": "fc6.", "bn_fov.": "bn_fc6.", "conv_fov2.": "fc7.", "bn_fov2.": "bn_fc7.",
                "cls_conv.": "classifier."}


def is_authors_state_dict(sd: dict[str, torch.Tensor]) -> bool:
    """True for a checkpoint of the authors' deeplabv1 (keys `backbone.*`, `cls_conv.*`)."""
    keys = [k[len("module."):] if k.startswith("module.") else k for k in sd]
    return any(k.startswith("cls_conv.") for k in keys) and any(k.startswith("backbone.") for k in keys)


def from_authors_state_dict(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Their deeplabv1 key names -> ours; any other state dict is returned unchanged."""
    if not is_authors_state_dict(sd):
        return sd
    out = {}
    for k, v in sd.items():
        k = k[len("module."):] if k.startswith("module.") else k
        if k.startswith("backbone."):
            k = k[len("backbone."):]
        else:
            for theirs, ours in AUTHORS_HEAD.items():
                if k.startswith(theirs):
                    k = ours + k[len(theirs):]
                    break
        out[k] = v
    return out


class DeepLabLargeFOV(ResNet38):
    def __init__(self, num_classes: int = 21, backbone: ResNet38Config = ResNet38Config(),
                 dropout: float = 0.5) -> None:
        """num_classes includes background (channel 0)."""
        super().__init__(backbone)
        self.num_classes = num_classes
        c6 = backbone.feature_channels["conv6"]
        self.fc6 = nn.Conv2d(c6, HEAD_CHANNELS, 3, padding=DILATION, dilation=DILATION, bias=False)
        self.bn_fc6 = nn.BatchNorm2d(HEAD_CHANNELS, momentum=BN_MOMENTUM)
        self.fc7 = nn.Conv2d(HEAD_CHANNELS, HEAD_CHANNELS, 1, bias=False)
        self.bn_fc7 = nn.BatchNorm2d(HEAD_CHANNELS, momentum=BN_MOMENTUM)
        self.dropout = nn.Dropout(dropout)  # element-wise, as their deeplabv1 (not Dropout2d)
        self.classifier = nn.Conv2d(HEAD_CHANNELS, num_classes, 1, bias=True)  # bias: torch's default init
        for m in (self.fc6, self.fc7, self.classifier):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def new_modules(self) -> list[nn.Module]:
        return [self.fc6, self.bn_fc6, self.fc7, self.bn_fc7, self.classifier]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> logits (B, num_classes, h, w) at stride 8."""
        f = self.forward_features(x)["conv6"]
        f = F.relu(self.bn_fc6(self.fc6(f)))
        f = F.relu(self.bn_fc7(self.fc7(f)))
        return self.classifier(self.dropout(f))
