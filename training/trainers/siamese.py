"""The affine transformation A(.) of the siamese branch (the paper's Eq. 3 and Table 3).

`rescale` (the published setting): branch 2 sees the batch downscaled by 0.3
(bilinear, align_corners=True); A(cam1) is cam1 resized the same way. `flip`:
horizontal flip. `rotate`: a random angle in [-20, 20] degrees per sample.
`translate`: a random shift of up to 15 pixels (at the branch-1 resolution) along
each axis per sample. Rotation and translation are one affine warp (grid_sample,
zero padding) applied identically to the images and to branch-1's maps; pixels the
warp leaves undefined are masked out of ER and ECR.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

TRANSFORMS = ("rescale", "flip", "rotate", "translate")


@dataclass(frozen=True)
class SiameseConfig:
    ops: tuple[str, ...] = ("rescale",)
    scale: float = 0.3  # the release's scale_factor
    max_rotation: float = 20.0  # degrees
    translation: float = 15.0  # pixels at branch-1 resolution

    def __post_init__(self) -> None:
        bad = [o for o in self.ops if o not in TRANSFORMS]
        if bad or not self.ops:
            raise ValueError(f"unknown transform(s) {bad or self.ops}; choose from {', '.join(TRANSFORMS)}")
        if not 0 < self.scale <= 1:
            raise ValueError(f"siamese scale must be in (0, 1], got {self.scale}")


def parse_transforms(text: str) -> tuple[str, ...]:
    """'rescale,flip' -> ('rescale', 'flip'); order is irrelevant (applied in TRANSFORMS order)."""
    ops = tuple(dict.fromkeys(t.strip().lower() for t in text.replace("+", ",").split(",") if t.strip()))
    SiameseConfig(ops=ops)  # validates
    return tuple(o for o in TRANSFORMS if o in ops)


class TransformPlan:
    """One sampled A(.) for a batch: `image(x)` builds branch 2's input, `map(t)` moves
    branch-1 maps (B, C, H, W) into branch 2's geometry, `mask` marks valid pixels."""

    def __init__(self, cfg: SiameseConfig, hw: tuple[int, int], theta: torch.Tensor | None, flip: bool) -> None:
        H, W = hw
        if "rescale" in cfg.ops:
            self.size = (max(1, math.floor(H * cfg.scale)), max(1, math.floor(W * cfg.scale)))
        else:
            self.size = (H, W)
        self.rescale = "rescale" in cfg.ops
        self.flip = flip
        self.theta = theta  # (B, 2, 3) or None
        self._grid: torch.Tensor | None = None
        self.mask: torch.Tensor | None = None

    def _geometry(self, t: torch.Tensor) -> torch.Tensor:
        if self.rescale and tuple(t.shape[-2:]) != self.size:
            t = F.interpolate(t, self.size, mode="bilinear", align_corners=True)
        if self.flip:
            t = t.flip(-1)
        if self.theta is not None:
            if self._grid is None:
                theta = self.theta.to(t.device, torch.float32)
                self._grid = F.affine_grid(theta, [t.shape[0], 1, *self.size], align_corners=True)
                ones = torch.ones(t.shape[0], 1, *self.size, device=t.device)
                valid = F.grid_sample(ones, self._grid, mode="bilinear", padding_mode="zeros", align_corners=True)
                self.mask = (valid > 0.999).float()
            t = F.grid_sample(t, self._grid.to(t.dtype), mode="bilinear", padding_mode="zeros", align_corners=True)
        return t

    def image(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> (B, 3, h, w): branch 2's input A(I)."""
        return self._geometry(x)

    def map(self, t: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) branch-1 map -> A(map) (B, C, h, w)."""
        return self._geometry(t)


def sample_transform(cfg: SiameseConfig, batch: int, hw: tuple[int, int], generator: torch.Generator) -> TransformPlan:
    """Draw the random parts (rotation angles, shifts) from `generator`."""
    H, W = hw
    theta = None
    if "rotate" in cfg.ops or "translate" in cfg.ops:
        ang = torch.zeros(batch)
        shift = torch.zeros(batch, 2)
        if "rotate" in cfg.ops:
            ang = (torch.rand(batch, generator=generator) * 2 - 1) * math.radians(cfg.max_rotation)
        if "translate" in cfg.ops:
            shift = (torch.rand(batch, 2, generator=generator) * 2 - 1) * cfg.translation  # pixels (x, y)
        # normalised output coords -> normalised input coords, aspect-correct rotation:
        # n_in = S^-1 R(-a) S n_out - 2 t / (size - 1), S = diag(W, H)
        c, s = torch.cos(ang), torch.sin(ang)
        theta = torch.zeros(batch, 2, 3)
        theta[:, 0, 0] = c
        theta[:, 0, 1] = s * H / W
        theta[:, 1, 0] = -s * W / H
        theta[:, 1, 1] = c
        theta[:, 0, 2] = -2 * shift[:, 0] / max(W - 1, 1)
        theta[:, 1, 2] = -2 * shift[:, 1] / max(H - 1, 1)
    return TransformPlan(cfg, hw, theta, flip="flip" in cfg.ops)
