"""The shallow-query terms added to the ESE objective: distillation, contrastive, or both."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn

from esrag.train.config import QueryLoss
from esrag.train.losses.base import PairEmbeddings
from esrag.train.losses.query_contrastive import QueryContrastiveLoss
from esrag.train.losses.query_distill import QueryDistillLoss

__all__ = ["ShallowQueryLoss"]


class ShallowQueryLoss(nn.Module):
    """``weight · mean_k (distill(k) + contrastive(k))`` over the query layers ``k``.

    ``mode`` picks the terms (:class:`~esrag.train.config.QueryLoss`): ``distill`` pulls each
    anchor's layer-k embedding towards its own detached last-layer embedding
    (:class:`QueryDistillLoss`, label-free, every batch); ``contrastive`` scores each anchor's
    layer-k embedding against the batch's detached last-layer positives and hard negatives
    (:class:`QueryContrastiveLoss`, pair batches only; scored batches have no positives to
    rank); ``both`` adds the two. Only anchors are queries here: positives and negatives are
    documents, whose deep vectors these terms never train.
    """

    def __init__(
        self, layers: Sequence[int], mode: QueryLoss | str, *, scale: float, weight: float = 1.0
    ) -> None:
        super().__init__()
        if not layers:
            raise ValueError("ShallowQueryLoss needs at least one query layer")
        self.layers = tuple(sorted(set(layers)))
        self.mode = QueryLoss(mode)
        self.weight = float(weight)
        self.distill = QueryDistillLoss() if self.mode in (QueryLoss.DISTILL, QueryLoss.BOTH) else None
        self.contrastive = (
            QueryContrastiveLoss(scale) if self.mode in (QueryLoss.CONTRASTIVE, QueryLoss.BOTH) else None
        )

    def forward(self, per_layer: Mapping[int, PairEmbeddings]) -> tuple[torch.Tensor, dict[str, float]]:
        """(the weighted loss, per-layer values for logging); the deepest layer is the teacher."""
        last = max(per_layer)
        missing = [k for k in self.layers if k not in per_layer or k >= last]
        if missing:
            raise ValueError(f"query layers {missing} need embeddings shallower than the last layer {last}")
        deep = per_layer[last]
        pairs = deep.scores is None
        total = deep.anchors.new_zeros((), dtype=torch.float32)
        parts: dict[str, float] = {}
        for k in self.layers:
            shallow = per_layer[k]
            if self.distill is not None:
                term = self.distill(shallow.anchors, deep.anchors)
                parts[f"qdistill_L{k}"] = float(term.detach())
                total = total + term
            if self.contrastive is not None and pairs:
                term = self.contrastive(shallow, deep)
                parts[f"qnce_L{k}"] = float(term.detach())
                total = total + term
        total = self.weight * total / len(self.layers)
        parts["query"] = float(total.detach())
        return total, parts
