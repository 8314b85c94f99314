"""InfoNCE with in-batch negatives (and optional hard negatives) — the base loss for pairs."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from esrag.train.losses.base import PairEmbeddings, cosine_logits

__all__ = ["InfoNCELoss"]


class InfoNCELoss(nn.Module):
    """``mean_i −log softmax_j(scale · cos(a_i, c_j))[i]``, candidates c = positives (+ negatives).

    The contrastive part of AnglE for (query, positive[, hard negative]) data, i.e.
    sentence-transformers' MultipleNegativesRankingLoss; ``scale`` is 1/τ (AnglE's
    ``ibn_tau`` = 20). Known false negatives (duplicate positives, other positives of the
    same anchor) are masked out of the denominator.

    Deviations from AnglE: AnglE's full objective also adds the cosine (CoSENT) and angle
    terms on pair labels; for unlabelled pairs only the in-batch term is defined, which is
    what ESE's retrieval-style training uses. ``symmetric=True`` adds the positive → anchor
    direction (not in the paper).
    """

    def __init__(self, scale: float = 20.0, *, symmetric: bool = False) -> None:
        super().__init__()
        if scale <= 0:
            raise ValueError(f"scale must be > 0, got {scale}")
        self.scale = float(scale)
        self.symmetric = symmetric

    def logits(self, batch: PairEmbeddings) -> torch.Tensor:
        """The in-batch logits the loss is a cross-entropy over (used by learn-to-express)."""
        return cosine_logits(batch, self.scale)

    def forward(self, batch: PairEmbeddings) -> torch.Tensor:
        """The InfoNCE loss of a batch (mean over anchors)."""
        logits = self.logits(batch)
        target = torch.arange(batch.batch_size, device=logits.device)
        loss = F.cross_entropy(logits, target)
        if self.symmetric:
            loss = (loss + F.cross_entropy(logits[:, : batch.batch_size].T, target)) / 2
        return loss
