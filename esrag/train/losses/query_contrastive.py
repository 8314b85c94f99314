"""Shallow-query contrastive loss: a query's layer-k embedding against its documents' last layer."""

from __future__ import annotations

import torch
from torch import nn

from esrag.train.losses.base import PairEmbeddings
from esrag.train.losses.infonce import InfoNCELoss

__all__ = ["QueryContrastiveLoss"]


class QueryContrastiveLoss(nn.Module):
    """InfoNCE between the anchors' layer-k embeddings and the last layer's positives (and hard
    negatives), with the batch's other positives as negatives: shallow queries against deep
    documents, the setting an index with ``query_layer=k, query_map="none"`` searches.

    Composed from :class:`~esrag.train.losses.infonce.InfoNCELoss` (the same ``scale``, the
    same false-negative mask). The document side is **detached** by default
    (``train_documents=False``): this term then only moves the query's layers 1..k, and the
    documents' last-layer vectors are left to the ESE base loss, which scores them against
    deep queries; ``train_documents=True`` lets the documents move towards shallow queries too.
    """

    def __init__(self, scale: float = 20.0, *, train_documents: bool = False) -> None:
        super().__init__()
        self.infonce = InfoNCELoss(scale)
        self.train_documents = bool(train_documents)

    def forward(self, shallow: PairEmbeddings, deep: PairEmbeddings) -> torch.Tensor:
        """The loss of ``shallow.anchors`` (layer k) against ``deep``'s positives and negatives."""
        positives, negatives = deep.positives, deep.negatives
        if not self.train_documents:
            positives = positives.detach()
            negatives = None if negatives is None else negatives.detach()
        batch = PairEmbeddings(
            shallow.anchors,
            positives,
            negatives,
            None,
            deep.false_negatives,
        )
        return self.infonce(batch)
