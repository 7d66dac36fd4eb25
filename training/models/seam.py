"""The SEAM network: ResNet-38 + CAM head (fc8) + pixel correlation module (PCM)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from seam.common.pcm_blocks import block_columns
from seam.training.models.resnet38 import ResNet38, ResNet38Config


def pcm_normalize(cam: torch.Tensor) -> torch.Tensor:
    """The PCM's input: max-normalised CAM, background = 1 - max fg, only the winning fg kept.

    (B, C, h, w) -> (B, C, h, w). No gradient flows through it in the release.
    """
    c = F.relu(cam)
    peak = c.flatten(2).max(dim=-1)[0][..., None, None] + 1e-5
    n = F.relu(c - 1e-5) / peak
    fg = n[:, 1:]
    fg_max = fg.max(dim=1, keepdim=True)[0]
    # out-of-place version of the release's masked assignment (exports cleanly to ONNX)
    fg = torch.where(fg < fg_max, torch.zeros_like(fg), fg)
    return torch.cat([1 - fg_max, fg], dim=1)


def pcm_features(feats: torch.Tensor, f9: nn.Conv2d) -> torch.Tensor:
    """L2-normalised PCM embedding f9(feats): (B, F, h, w) -> (B, D, hw)."""
    g = f9(feats).flatten(2)
    return g / (torch.norm(g, dim=1, keepdim=True) + 1e-5)


def pcm_block(n: torch.Tensor, g: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """Columns `q` of the PCM: n (B, C, N), g (B, D, N), q = g[..., cols] (B, D, M) -> (B, C, M).

    Column j of the release's aff is relu(g^T g[:, j]) / (its column sum + 1e-5), so a block
    of columns needs only those columns: [n; 1] @ relu(g^T q) gives n @ A and, as its last
    row, the column sums, and the division happens on (C, M) instead of (N, M).
    """
    aff = F.relu(torch.bmm(g.transpose(1, 2), q))  # (B, N, M)
    n1 = torch.cat([n, torch.ones_like(n[:, :1])], dim=1)
    prod = torch.bmm(n1, aff)
    return prod[:, :-1] / (prod[:, -1:] + 1e-5)


def pcm(cam_norm: torch.Tensor, feats: torch.Tensor, f9: nn.Conv2d) -> torch.Tensor:
    """Pixel correlation module: cosine affinities of f9(features), column-normalised.

    cam_norm (B, C, h, w), feats (B, F, h, w) -> (B, C, h, w). With gradients (training
    crops) it is the release's dense form; without (inference) it runs in column blocks
    with memory O(hw * block) instead of O(hw^2), equal to the dense form to float error.
    """
    B, C, h, w = cam_norm.shape
    g = pcm_features(feats, f9)  # (B, D, hw)
    if not torch.is_grad_enabled():
        n = cam_norm.flatten(2)
        step = block_columns(h * w, B)
        cols = [pcm_block(n, g, g[:, :, i:i + step]) for i in range(0, h * w, step)]
        return torch.cat(cols, dim=2).view(B, C, h, w)
    aff = F.relu(torch.bmm(g.transpose(1, 2), g))  # (B, hw, hw)
    aff = aff / (aff.sum(dim=1, keepdim=True) + 1e-5)
    return torch.bmm(cam_norm.flatten(2), aff).view(B, C, h, w)


class SEAM(ResNet38):
    """Subclasses the backbone (as the release does) so state-dict keys are the authors'."""

    def __init__(self, num_classes: int = 21, backbone: ResNet38Config = ResNet38Config()) -> None:
        """num_classes includes background (channel 0)."""
        super().__init__(backbone)
        self.num_classes = num_classes
        fc = backbone.feature_channels
        self.dropout7 = nn.Dropout2d(0.5)
        self.fc8 = nn.Conv2d(fc["conv6"], num_classes, 1, bias=False)
        self.f8_3 = nn.Conv2d(fc["conv4"], 64, 1, bias=False)
        self.f8_4 = nn.Conv2d(fc["conv5"], 128, 1, bias=False)
        self.f9 = nn.Conv2d(3 + 64 + 128, 192, 1, bias=False)
        # the release's initialisation (network/resnet38_SEAM.py): fc8 xavier-uniform, the PCM's
        # f8_3 / f8_4 kaiming-normal, f9 xavier-uniform with gain 4
        nn.init.xavier_uniform_(self.fc8.weight)
        for m in (self.f8_3, self.f8_4):
            nn.init.kaiming_normal_(m.weight)
        nn.init.xavier_uniform_(self.f9.weight, gain=4)

    def new_modules(self) -> list[nn.Module]:
        return [self.fc8, self.f8_3, self.f8_4, self.f9]

    def pcm_inputs(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(B, 3, H, W) -> cam (B, C, h, w), the PCM's normalised CAM (B, C, h, w) and its
        features before f9 (B, F, h, w), all at the output stride."""
        d = self.forward_features(x)
        cam = self.fc8(self.dropout7(d["conv6"]))
        h, w = cam.shape[-2:]
        with torch.no_grad():
            cam_norm = pcm_normalize(cam.detach())
        f = torch.cat([
            F.interpolate(x, (h, w), mode="bilinear", align_corners=True),
            F.relu(self.f8_3(d["conv4"].detach())),
            F.relu(self.f8_4(d["conv5"].detach())),
        ], dim=1)
        return cam, cam_norm, f

    def forward_cam(self, x: torch.Tensor) -> torch.Tensor:
        """The raw CAM at the output stride, without the PCM."""
        return self.fc8(self.dropout7(self.forward_features(x)["conv6"]))

    def forward_stride8(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, 3, H, W) -> (cam, cam_rv) at the output stride, before upsampling."""
        cam, cam_norm, f = self.pcm_inputs(x)
        return cam, pcm(cam_norm, f, self.f9)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """As the release: both maps upsampled to the input size (align_corners=True)."""
        cam, cam_rv = self.forward_stride8(x)
        size = x.shape[-2:]
        return (F.interpolate(cam, size, mode="bilinear", align_corners=True),
                F.interpolate(cam_rv, size, mode="bilinear", align_corners=True))
