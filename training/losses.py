"""SEAM's loss terms as pure functions (no state, no device handling).

Shapes: B batch, C classes including background (channel 0), H x W spatial size.
`label` is always the (B, C) multi-hot vector with a leading 1 for background,
as the authors' `torch.cat((bg_score, label), 1)`.

The composition (see `seam_losses`) follows the authors' `train_SEAM.py`:

    z = GAP(cam)                                 classification on channels 1..C-1
    cam, rv := max_norm(.) * label               (min-max per channel; branch 1 resized to branch 2)
    ER  = mean |A(cam1)[1:] - cam2[1:]|
    cam[0] := 1 - max_c cam[1:]
    ECR = ohem(|onehot(cam2) - A(rv1)|) + ohem(|onehot(A(cam1)) - rv2|)
    cls = (l1 + l2) / 2 + (minpool(rv1) + minpool(rv2)) / 2
    total = cls + ER + ECR
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

EPS = 1e-5
OHEM_RATIO = 0.2  # ECR keeps the largest 20% of the C*h*w absolute differences per sample
MIN_POOL_RATIO = 0.25  # adaptive min pooling keeps the smallest 25% of pixels


def gap_logits(cam: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B, C) global average pool: the classification scores z."""
    return cam.mean(dim=(2, 3))


def classification_loss(cam: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
    """Eq. (7): multi-label soft margin on the foreground channels of GAP(cam).

    cam (B, C, H, W) raw CAM; label (B, C) with label[:, 0] = 1 (background,
    never supervised). Returns a scalar, averaged over B and the C-1 classes.
    """
    z = gap_logits(cam)[:, 1:]  # (B, C-1)
    return F.multilabel_soft_margin_loss(z, label[:, 1:].to(z.dtype))


def max_norm(x: torch.Tensor, eps: float = EPS) -> torch.Tensor:
    """The release's `max_norm` (tool/visualization.py, torch 4-D branch), per (sample, channel):

        p = relu(x);  relu(p - min_hw p - eps) / (max_hw p - min_hw p + eps)

    (B, C, H, W) -> same. Subtracting the minimum matters for the PCM output, whose
    maps have a high floor: without it their normalised maps never reach 0 and ECR's
    OHEM picks different errors. The background channel is normalised too (ECR
    overwrites it).
    """
    p = F.relu(x)
    flat = p.flatten(2)
    lo = flat.amin(dim=-1)[..., None, None]  # (B, C, 1, 1)
    hi = flat.amax(dim=-1)[..., None, None]
    return F.relu(p - lo - eps) / (hi - lo + eps)


def peak_norm(x: torch.Tensor, eps: float = EPS) -> torch.Tensor:
    """relu(x) / (max_hw relu(x) + eps) per (sample, channel): no minimum subtracted.

    Not the release's training normalisation (that is `max_norm`); kept for the
    ablation (`bench/ablation.py --rows seam-peak`: not better over 3 seeds, so no CLI
    option and no recipe uses it) and the parity tests, and it is what the network's own
    forward uses for the PCM input.
    """
    x = F.relu(x)
    peak = x.flatten(2).amax(dim=-1)[..., None, None]  # (B, C, 1, 1)
    return x / (peak + eps)


CAM_NORMS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {"minmax": max_norm, "peak": peak_norm}


def with_background(cam: torch.Tensor) -> torch.Tensor:
    """Eq. (11): channel 0 := 1 - max over the foreground channels. (B, C, H, W) -> same."""
    fg = cam[:, 1:]
    return torch.cat([1 - fg.amax(dim=1, keepdim=True), fg], dim=1)


def max_onehot(cam: torch.Tensor) -> torch.Tensor:
    """Zero every foreground channel that is not the pixel's foreground maximum.

    (B, C, H, W) -> same; channel 0 is kept unchanged. Ties all survive (the
    release compares with `!=`), so pixels where every foreground score is 0 stay 0.
    Out of place: the release did this in place on a detached alias.
    """
    fg = cam[:, 1:]
    fg_max = fg.amax(dim=1, keepdim=True)
    fg = torch.where(fg == fg_max, fg, torch.zeros_like(fg))
    return torch.cat([cam[:, :1], fg], dim=1)


def equivariant_loss(cam1_t: torch.Tensor, cam2: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Eq. (9), ER: mean |A(cam1) - cam2| over the foreground channels.

    cam1_t: branch-1 max-normed, label-masked CAM already transformed to branch 2's
    geometry (B, C, h, w); cam2: branch 2's (B, C, h, w). `mask` (B, 1, h, w) of
    valid pixels (rotation/translation leave borders undefined): the mean is then
    taken over valid pixels only. Returns a scalar.
    """
    d = (cam1_t[:, 1:] - cam2[:, 1:]).abs()
    if mask is None:
        return d.mean()
    m = mask.expand_as(d)
    return (d * m).sum() / m.sum().clamp_min(1.0)


def ohem_mean(x: torch.Tensor, ratio: float = OHEM_RATIO, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean of the k = int(C*h*w*ratio) largest values of each sample, averaged over B.

    x (B, C, h, w) non-negative losses -> scalar. With a validity mask, invalid
    entries are set to 0 before the selection (they can only fill the tail).
    ratio >= 1 is the plain mean (the `--no-ohem` ablation).
    """
    B = x.shape[0]
    if mask is not None:
        x = x * mask
    flat = x.reshape(B, -1)  # (B, C*h*w)
    if ratio >= 1:
        return flat.mean()
    k = max(1, int(flat.shape[1] * ratio))
    return flat.topk(k, dim=-1)[0].mean()


def ecr_loss(cam1_t: torch.Tensor, rv1_t: torch.Tensor, cam2: torch.Tensor, rv2: torch.Tensor,
             ohem_ratio: float = OHEM_RATIO, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Eq. (10), ECR with OHEM: ohem(|onehot(cam2) - A(rv1)|) + ohem(|onehot(A(cam1)) - rv2|).

    All four maps are (B, C, h, w), max-normed, label-masked, in branch 2's
    geometry; cam1_t and cam2 already carry the background channel of
    `with_background`. The one-hot targets are detached: only the PCM outputs
    (rv) receive gradients from this term.
    """
    t1 = max_onehot(cam2.detach())
    t2 = max_onehot(cam1_t.detach())
    return (ohem_mean((t1 - rv1_t).abs(), ohem_ratio, mask)
            + ohem_mean((t2 - rv2).abs(), ohem_ratio, mask))


def min_pool_loss(rv: torch.Tensor, label: torch.Tensor, ratio: float = MIN_POOL_RATIO) -> torch.Tensor:
    """The release's "adaptive min pooling" (not in the paper).

    rv (B, C, H, W) raw PCM output, label (B, C). Per pixel take the max over the
    foreground channels of rv*label, keep the k = H*W//4 smallest pixels of each
    sample, return sum(relu(those)) / (k*B). Pushes the least activated quarter of
    every image towards zero (shifts the best background threshold only).
    """
    B, _, H, W = rv.shape
    x = (rv * label[:, :, None, None].to(rv.dtype))[:, 1:].amax(dim=1)  # (B, H, W)
    k = max(1, int(H * W * ratio))
    low = x.reshape(B, -1).topk(k, dim=-1, largest=False)[0]
    return F.relu(low).sum() / (k * B)


@dataclass(frozen=True)
class LossSwitches:
    """Which terms are on: the rows of the paper's Table 1."""

    er: bool = True
    pcm: bool = True  # ECR (and the min-pooling term on the PCM output)
    ohem: bool = True
    norm: str = "minmax"  # the release's max_norm; "peak" divides by the max alone (ablation only)

    def __post_init__(self) -> None:
        if self.norm not in CAM_NORMS:
            raise ValueError(f"unknown CAM normalisation {self.norm!r}; choose from {', '.join(CAM_NORMS)}")

    @property
    def siamese(self) -> bool:
        return self.er or self.pcm


def seam_losses(
    out1: tuple[torch.Tensor, torch.Tensor],
    out2: tuple[torch.Tensor, torch.Tensor] | None,
    label: torch.Tensor,
    transform_map: Callable[[torch.Tensor], torch.Tensor] | None = None,
    mask: torch.Tensor | None = None,
    switches: LossSwitches = LossSwitches(),
) -> dict[str, torch.Tensor]:
    """All terms of one siamese step. Returns {"loss", "cls", "er", "ecr", "minpool"} (scalars).

    out1 = (cam1, rv1) from the original image (B, C, H, W); out2 = (cam2, rv2) from
    the transformed image (B, C, h, w), or None for the one-branch CAM baseline.
    transform_map: A(.) mapping a branch-1 map (B, C, H, W) to branch 2's geometry
    (B, C, h, w) (the scale-0.3 resize by default). mask: valid pixels of A(.)
    (B, 1, h, w) or None.
    """
    cam1, rv1 = out1
    label = label.to(cam1.dtype)
    lab = label[:, :, None, None]  # (B, C, 1, 1)
    zero = cam1.new_zeros(())
    cls = classification_loss(cam1, label)
    minpool = min_pool_loss(rv1, label) if switches.pcm else zero
    if out2 is None:
        return {"loss": cls + minpool, "cls": cls, "er": zero, "ecr": zero, "minpool": minpool}
    cam2, rv2 = out2
    if transform_map is None:
        size = cam2.shape[-2:]

        def transform_map(t: torch.Tensor) -> torch.Tensor:
            return F.interpolate(t, size, mode="bilinear", align_corners=True)

    cls = (cls + classification_loss(cam2, label)) / 2
    if switches.pcm:
        minpool = (minpool + min_pool_loss(rv2, label)) / 2
    norm = CAM_NORMS[switches.norm]
    c1 = transform_map(norm(cam1)) * lab
    r1 = transform_map(norm(rv1)) * lab
    c2 = norm(cam2) * lab
    r2 = norm(rv2) * lab
    er = equivariant_loss(c1, c2, mask) if switches.er else zero
    ecr = zero
    if switches.pcm:
        ecr = ecr_loss(with_background(c1), r1, with_background(c2), r2,
                       OHEM_RATIO if switches.ohem else 1.0, mask)
    return {"loss": cls + minpool + er + ecr, "cls": cls, "er": er, "ecr": ecr, "minpool": minpool}
