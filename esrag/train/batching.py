"""Deterministic batch plans: which rows of which source form each micro-batch of an epoch.

Batches never mix sources (a scored batch needs CoSENT, a triplet batch has negatives). The
order of epoch ``e`` depends only on ``(seed, e)``, not on any global RNG, so a resumed run
sees exactly the batches the interrupted one would have.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from esrag.train.examples import Examples

__all__ = ["Batch", "BatchPlan", "false_negative_mask"]


@dataclass(frozen=True)
class Batch:
    """The texts of one micro-batch (and scores for scored sources)."""

    source: int
    anchors: list[str]
    positives: list[str]
    negatives: list[str] | None
    scores: list[float] | None


def false_negative_mask(anchors: Sequence[str], positives: Sequence[str]) -> torch.Tensor:
    """(B, B) bool: True off the diagonal where rows share their anchor or their positive."""
    size = len(anchors)
    mask = torch.zeros(size, size, dtype=torch.bool)
    for i in range(size):
        for j in range(size):
            if i != j and (anchors[i] == anchors[j] or positives[i] == positives[j]):
                mask[i, j] = True
    return mask


class BatchPlan:
    """Shuffled, source-homogeneous micro-batches over several :class:`Examples`.

    Each source is shuffled and cut into batches of ``batch_size`` (a last batch of fewer
    than 2 rows is dropped); the batches of all sources are then shuffled together.
    """

    def __init__(self, sources: Sequence[Examples], batch_size: int, seed: int) -> None:
        self.sources = list(sources)
        self.batch_size = batch_size
        self.seed = seed
        self._cache: tuple[int, list[tuple[int, list[int]]]] | None = None
        self.per_epoch = sum(self._count(len(ex)) for ex in self.sources)
        if self.per_epoch == 0:
            raise ValueError("no training batches: every source has fewer than 2 rows")

    def _count(self, rows: int) -> int:
        full, rest = divmod(rows, self.batch_size)
        return full + (1 if rest >= 2 else 0)

    def epoch(self, epoch: int) -> list[tuple[int, list[int]]]:
        """``(source, row indices)`` of every micro-batch of ``epoch``."""
        if self._cache is not None and self._cache[0] == epoch:
            return self._cache[1]
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        batches: list[tuple[int, list[int]]] = []
        for number, ex in enumerate(self.sources):
            order = torch.randperm(len(ex), generator=generator).tolist()
            for start in range(0, len(order), self.batch_size):
                rows = order[start : start + self.batch_size]
                if len(rows) >= 2:
                    batches.append((number, rows))
        shuffle = torch.randperm(len(batches), generator=generator).tolist()
        plan = [batches[i] for i in shuffle]
        self._cache = (epoch, plan)
        return plan

    def micro_batch(self, index: int) -> Batch:
        """The ``index``-th micro-batch counted from the start of training."""
        epoch, position = divmod(index, self.per_epoch)
        source, rows = self.epoch(epoch)[position]
        ex = self.sources[source]
        return Batch(
            source=source,
            anchors=[ex.anchors[i] for i in rows],
            positives=[ex.positives[i] for i in rows],
            negatives=None if ex.negatives is None else [ex.negatives[i] for i in rows],
            scores=None if ex.scores is None else [ex.scores[i] for i in rows],
        )
