"""The full ESE objective: base loss on the last layer + learn-to-express + learn-to-compress."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
from torch import nn

from esrag.train.losses.base import PairEmbeddings, base_terms
from esrag.train.losses.compress import CompressLoss
from esrag.train.losses.express import ExpressLoss

__all__ = ["ESELoss", "LossOutput"]


@dataclass
class LossOutput:
    """The scalar to back-propagate and its parts (floats, for logging)."""

    loss: torch.Tensor
    parts: dict[str, float] = field(default_factory=dict)


class ESELoss(nn.Module):
    """``base(L) + express_weight · express(1..L-1) + compress_weight · mean_l compress(l)``.

    ``per_layer`` maps each trained 1-based layer to its :class:`PairEmbeddings`; the
    deepest one is the last layer (the teacher of learn-to-express). Learn-to-compress runs
    on every trained layer (the shallow ones only when learn-to-express trains them) and
    its per-layer terms are averaged. Either part can be switched off by passing ``None``
    (the ablations of the paper).

    Deviation from the reference code: it also adds the base loss on the last layer's first
    K dims and weights shallow compression terms by 1/(1+ln i); here prefix terms are the
    opt-in ``prefix_dims`` and compression weights all layers equally.
    """

    def __init__(
        self,
        base: nn.Module,
        *,
        express: ExpressLoss | None = None,
        compress: CompressLoss | None = None,
        express_weight: float = 1.0,
        compress_weight: float = 1.0,
        prefix_dims: tuple[int, ...] = (),
    ) -> None:
        super().__init__()
        self.base = base
        self.express = express
        self.compress = compress
        self.express_weight = float(express_weight)
        self.compress_weight = float(compress_weight)
        self.prefix_dims = tuple(prefix_dims)

    def forward(self, per_layer: Mapping[int, PairEmbeddings]) -> LossOutput:
        """The ESE loss and its parts for ``per_layer`` embeddings."""
        if not per_layer:
            raise ValueError("ESELoss needs the embeddings of at least one layer")
        last = max(per_layer)
        teacher = per_layer[last]
        loss = base_terms(self.base, teacher, self.prefix_dims)
        parts = {f"base_L{last}": float(loss.detach())}
        shallow = {layer: emb for layer, emb in per_layer.items() if layer != last}
        if self.express is not None and shallow:
            express, express_parts = self.express(shallow, teacher)
            parts.update(express_parts)
            parts["express"] = float(express.detach())
            loss = loss + self.express_weight * express
        if self.compress is not None:
            trained = per_layer if self.express is not None else {last: teacher}
            terms = [self.compress(emb.texts(), layer) for layer, emb in sorted(trained.items())]
            compress = torch.stack(terms).mean()
            parts["compress"] = float(compress.detach())
            loss = loss + self.compress_weight * compress
        parts["loss"] = float(loss.detach())
        return LossOutput(loss, parts)
