"""AffinityNet training (the authors' `train_aff.py`)."""
from __future__ import annotations

import torch

EPS = 1e-5


def affinity_loss(aff: torch.Tensor, pairs: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """bg/4 + fg/4 + neg/2, each a mean cross-entropy over its pair set (the whole batch).

    aff (B, P, N) in (0, 1]; pairs (B, 3, P, N) float indicators: bg-positive,
    fg-positive, negative. Positives cost -log(aff + 1e-5), negatives
    -log(1 + 1e-5 - aff); the means divide by (count + 1e-5) as the release.
    """
    bg, fg, neg = pairs.unbind(dim=1)
    aff = aff.float()
    pos_ce = -torch.log(aff + EPS)
    bg_loss = (bg * pos_ce).sum() / (bg.sum() + EPS)
    fg_loss = (fg * pos_ce).sum() / (fg.sum() + EPS)
    neg_loss = (neg * -torch.log(1.0 + EPS - aff)).sum() / (neg.sum() + EPS)
    total = bg_loss / 4 + fg_loss / 4 + neg_loss / 2
    return total, {"bg": bg_loss.detach(), "fg": fg_loss.detach(), "neg": neg_loss.detach()}
