"""CoSENT (the cosine objective of AnglE) for (text1, text2, score) pairs."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from esrag.train.losses.base import PairEmbeddings, cosine_logits

__all__ = ["CoSENTLoss"]


class CoSENTLoss(nn.Module):
    """``log(1 + Σ_{s_i > s_j} exp(scale · (cos_j − cos_i)))`` over all pairs of batch rows.

    Every ordered couple of rows whose gold scores differ asks the higher-scored pair to have
    the higher cosine; only the ranking of scores matters, so their range is free. This is
    AnglE's ``cosine_loss`` (Li & Li 2023, ``cosine_tau`` = 20).

    Deviation from AnglE: its angle-difference term (optimising the angle in complex space)
    is not included; the paper's ablation shows it as a small refinement on top of CoSENT.
    """

    def __init__(self, scale: float = 20.0) -> None:
        super().__init__()
        if scale <= 0:
            raise ValueError(f"scale must be > 0, got {scale}")
        self.scale = float(scale)

    def logits(self, batch: PairEmbeddings) -> torch.Tensor:
        """In-batch ``scale · cos(text1_i, text2_j)`` (for learn-to-express's KL term)."""
        return cosine_logits(batch, self.scale)

    def forward(self, batch: PairEmbeddings) -> torch.Tensor:
        """The CoSENT loss of a scored batch."""
        if batch.scores is None:
            raise ValueError("CoSENTLoss needs scores: the batch has none")
        cos = F.cosine_similarity(batch.anchors.float(), batch.positives.float(), dim=-1)
        cos = self.scale * cos
        scores = batch.scores.to(cos.device, torch.float32)
        # diff[i, j] = cos_i − cos_j, kept where s_i < s_j (pair i should score lower)
        diff = cos[:, None] - cos[None, :]
        keep = scores[:, None] < scores[None, :]
        diff = diff.masked_fill(~keep, float("-inf"))
        zero = torch.zeros(1, device=cos.device, dtype=cos.dtype)
        return torch.logsumexp(torch.cat([zero, diff.flatten()]), dim=0)
