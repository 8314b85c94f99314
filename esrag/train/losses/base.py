"""The embeddings of one training batch, and the in-batch cosine logits every loss shares."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F

__all__ = ["MASKED_LOGIT", "PairEmbeddings", "base_terms", "cosine_logits", "float32_region"]

# A large finite negative rather than -inf: masked entries vanish from softmax without
# turning 0 * log(0) into NaN in the KL terms.
MASKED_LOGIT = -1e4


@dataclass(frozen=True)
class PairEmbeddings:
    """Un-normalised embeddings of one layer for a batch of B rows.

    anchors, positives: (B, H); negatives: (B, H) hard negatives or None; scores: (B,) gold
    similarity for scored pairs or None; false_negatives: (B, B) bool, True where positive j
    is also a right answer for anchor i (j != i: a duplicate text or another positive of the
    same anchor) so in-batch losses must not treat it as a negative; with negatives it may
    be (B, 2B), its last B columns marking hard negatives that are right answers too.
    """

    anchors: torch.Tensor
    positives: torch.Tensor
    negatives: torch.Tensor | None = None
    scores: torch.Tensor | None = None
    false_negatives: torch.Tensor | None = None

    def __post_init__(self) -> None:
        if self.anchors.ndim != 2 or self.anchors.shape != self.positives.shape:
            raise ValueError(
                f"anchors and positives must both be (B, H), got {tuple(self.anchors.shape)} "
                f"and {tuple(self.positives.shape)}"
            )
        if self.negatives is not None and self.negatives.shape != self.anchors.shape:
            raise ValueError(
                f"negatives must be {tuple(self.anchors.shape)}, got {tuple(self.negatives.shape)}"
            )
        batch = self.anchors.shape[0]
        if self.scores is not None and self.scores.shape != (batch,):
            raise ValueError(f"scores must be ({batch},), got {tuple(self.scores.shape)}")
        widths = {batch} if self.negatives is None else {batch, 2 * batch}
        if self.false_negatives is not None and (
            self.false_negatives.ndim != 2
            or self.false_negatives.shape[0] != batch
            or self.false_negatives.shape[1] not in widths
        ):
            shapes = " or ".join(f"({batch}, {w})" for w in sorted(widths))
            raise ValueError(f"false_negatives must be {shapes}, got {tuple(self.false_negatives.shape)}")

    @property
    def batch_size(self) -> int:
        """Rows in the batch (B)."""
        return int(self.anchors.shape[0])

    def prefix(self, dim: int) -> PairEmbeddings:
        """The same batch restricted to the first ``dim`` dimensions."""
        neg = None if self.negatives is None else self.negatives[:, :dim]
        return replace(self, anchors=self.anchors[:, :dim], positives=self.positives[:, :dim], negatives=neg)

    def texts(self) -> torch.Tensor:
        """Every embedding of the batch stacked: (2B or 3B, H)."""
        parts = [self.anchors, self.positives]
        if self.negatives is not None:
            parts.append(self.negatives)
        return torch.cat(parts, dim=0)


def float32_region(device: torch.device) -> contextlib.AbstractContextManager[None]:
    """A context in which autocast is off on ``device``'s type, so float32 inputs give float32
    results (matmuls included); a no-op when autocast is not active there.
    """
    try:
        active = torch.is_autocast_enabled(device.type)
    except TypeError:  # torch < 2.4: no device argument
        active = torch.is_autocast_cpu_enabled() if device.type == "cpu" else torch.is_autocast_enabled()
    if active:
        return torch.autocast(device.type, enabled=False)
    return contextlib.nullcontext()


def cosine_logits(batch: PairEmbeddings, scale: float) -> torch.Tensor:
    """``scale · cos(anchor_i, candidate_j)``: (B, B), or (B, 2B) with hard negatives.

    Candidates are the batch's positives, then its negatives. Known false negatives get
    :data:`MASKED_LOGIT`. Computed in float32 whatever the autocast dtype (autocast is
    switched off around the matmul, which would otherwise run in bf16/fp16).
    """
    with float32_region(batch.anchors.device):
        anchors = F.normalize(batch.anchors.float(), dim=-1)
        candidates = (
            batch.positives
            if batch.negatives is None
            else torch.cat([batch.positives, batch.negatives], dim=0)
        )
        candidates = F.normalize(candidates.float(), dim=-1)
        logits = scale * anchors @ candidates.T
    if batch.false_negatives is not None:
        mask = batch.false_negatives.to(logits.device)
        if mask.shape[1] < logits.shape[1]:  # (B, B) with hard negatives: those are all negatives
            mask = torch.cat([mask, torch.zeros_like(mask)], dim=1)
        logits = logits.masked_fill(mask, MASKED_LOGIT)
    return logits


def base_terms(
    base: torch.nn.Module, batch: PairEmbeddings, prefix_dims: tuple[int, ...] = ()
) -> torch.Tensor:
    """``base(batch)`` plus ``base`` on each prefix width in ``prefix_dims`` (narrower than H)."""
    loss = base(batch)
    width = batch.anchors.shape[1]
    for dim in prefix_dims:
        if dim < width:
            loss = loss + base(batch.prefix(dim))
    return loss
