"""ESE losses, one per file: base (InfoNCE, CoSENT), learn-to-express, learn-to-compress, ESE,
and the shallow-query terms (distillation, contrastive, their combination).
"""

from __future__ import annotations

from esrag.train.losses.base import PairEmbeddings, base_terms, cosine_logits
from esrag.train.losses.compress import CompressLoss, RunningPCA
from esrag.train.losses.cosent import CoSENTLoss
from esrag.train.losses.ese import ESELoss, LossOutput
from esrag.train.losses.express import ExpressLoss, kl_alignment, layer_weight
from esrag.train.losses.infonce import InfoNCELoss
from esrag.train.losses.query import ShallowQueryLoss
from esrag.train.losses.query_contrastive import QueryContrastiveLoss
from esrag.train.losses.query_distill import QueryDistillLoss

__all__ = [
    "CoSENTLoss",
    "CompressLoss",
    "ESELoss",
    "ExpressLoss",
    "InfoNCELoss",
    "LossOutput",
    "PairEmbeddings",
    "QueryContrastiveLoss",
    "QueryDistillLoss",
    "RunningPCA",
    "ShallowQueryLoss",
    "base_terms",
    "cosine_logits",
    "kl_alignment",
    "layer_weight",
]
