"""Query distillation: a query's shallow-layer embedding pulled towards its own last layer."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from esrag.train.losses.base import float32_region

__all__ = ["QueryDistillLoss"]


class QueryDistillLoss(nn.Module):
    """``mean_i (1 − cos(student_i, teacher_i))``: label-free training of a shallow query layer.

    ``student`` (B, H) is the pooled layer-k embedding of B query-like texts (training
    queries, titles, sentences), ``teacher`` (B, H) the same texts' last-layer embedding.
    Both are compared at full width after L2 normalisation, so the value is half the squared
    distance of the unit vectors: ``1 − cos = ‖s/|s| − t/|t|‖² / 2``.

    The teacher is **detached**: no gradient goes through the last layer's branch, so this
    term moves layers 1..k (towards producing the deep vector early) and never pulls the
    last layer towards the shallow one. Layers 1..k also feed the deep layers, so the
    documents' deep vectors still move when they change; the trainer's ESE base loss on the
    last layer is what keeps those vectors useful (see :class:`~esrag.train.losses.query.ShallowQueryLoss`).
    """

    def forward(self, student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        """The distillation loss of ``student`` (B, H) towards the detached ``teacher`` (B, H)."""
        if student.ndim != 2 or student.shape != teacher.shape:
            raise ValueError(
                f"student and teacher must both be (B, H), got {tuple(student.shape)} and "
                f"{tuple(teacher.shape)}"
            )
        with float32_region(student.device):
            cos = F.cosine_similarity(student.float(), teacher.detach().float(), dim=-1)
        return (1.0 - cos).mean()
