"""Deterministic batch plans: which rows of which source form each micro-batch of an epoch.

Batches never mix sources (a scored batch needs CoSENT, a triplet batch has negatives), and
a batch never holds two rows with the same anchor or the same positive (sentence-transformers
calls this ``NO_DUPLICATES``): a query with tens of judged documents is spread over as many
batches instead of filling one with rows that are each other's false negatives. The order of
epoch ``e`` depends only on ``(seed, e)``, not on any global RNG, so a resumed run sees
exactly the batches the interrupted one would have.

:func:`false_negative_mask` marks the in-batch candidates that are right answers for an
anchor (the same query, the same document, another judged-relevant document of the same
query, a hard negative that is one of them), which the losses leave out of the denominator.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch

from esrag.train.examples import Examples

__all__ = ["Batch", "BatchPlan", "false_negative_mask", "no_duplicate_batches"]


@dataclass(frozen=True)
class Batch:
    """The texts of one micro-batch (and scores for scored sources).

    ``related`` holds, per row, every text known to be a right answer for its anchor (None:
    only the rows themselves are known).
    """

    source: int
    anchors: list[str]
    positives: list[str]
    negatives: list[str] | None
    scores: list[float] | None
    related: list[frozenset[str]] | None = None


def false_negative_mask(
    anchors: Sequence[str],
    positives: Sequence[str],
    *,
    related: Sequence[frozenset[str]] | None = None,
    negatives: Sequence[str] | None = None,
) -> torch.Tensor:
    """(B, B) bool, or (B, 2B) with ``negatives``: True where candidate j is a right answer
    for anchor i, so in-batch losses must not treat it as a negative.

    Candidates are the positives, then the negatives. Positive j (j != i) is masked when
    rows i and j share their anchor or their positive, or when positive j is in
    ``related[i]``; negative j is masked when it equals positive i or is in ``related[i]``.
    """
    size = len(anchors)
    width = size if negatives is None else 2 * size
    mask = torch.zeros(size, width, dtype=torch.bool)
    for i in range(size):
        known = related[i] if related is not None else frozenset()
        for j in range(size):
            if i != j and (anchors[i] == anchors[j] or positives[i] == positives[j] or positives[j] in known):
                mask[i, j] = True
        if negatives is not None:
            for j, negative in enumerate(negatives):
                if negative == positives[i] or negative in known:
                    mask[i, size + j] = True
    return mask


def no_duplicate_batches(
    order: Sequence[int], keys: Sequence[tuple[str, ...]], batch_size: int
) -> list[list[int]]:
    """Cut ``order`` into batches of ``batch_size`` in which no two rows share a key.

    A row whose key is already in the batch being filled waits for the next one (keeping its
    place in the order); batches are full except, possibly, the last few.
    """
    batches: list[list[int]] = []
    remaining = list(order)
    while remaining:
        batch: list[int] = []
        seen: set[str] = set()
        waiting: list[int] = []
        position = 0
        while position < len(remaining) and len(batch) < batch_size:
            row = remaining[position]
            position += 1
            if seen.isdisjoint(keys[row]):
                batch.append(row)
                seen.update(keys[row])
            else:
                waiting.append(row)
        batches.append(batch)
        remaining = waiting + remaining[position:]
    return batches


class BatchPlan:
    """Shuffled, source-homogeneous, duplicate-free micro-batches over several :class:`Examples`.

    Each source is shuffled and cut into batches of ``batch_size`` without repeated anchors
    or positives (a last batch of fewer than 2 rows is dropped); the batches of all sources
    are then shuffled together. ``per_epoch`` counts the first epoch's batches; a later
    epoch may hold a few more or fewer when duplicates had to wait.
    """

    def __init__(self, sources: Sequence[Examples], batch_size: int, seed: int) -> None:
        self.sources = list(sources)
        self.batch_size = batch_size
        self.seed = seed
        self._keys = [[(a, p) for a, p in zip(ex.anchors, ex.positives, strict=True)] for ex in self.sources]
        self._related: list[Mapping[str, frozenset[str]] | None] = [
            None if ex.scored else ex.relevant() for ex in self.sources
        ]
        self._cache: tuple[int, list[tuple[int, list[int]]]] | None = None
        self._sizes: list[int] = []
        self.per_epoch = len(self.epoch(0))
        if self.per_epoch == 0:
            raise ValueError("no training batches: every source has fewer than 2 rows")

    def epoch(self, epoch: int) -> list[tuple[int, list[int]]]:
        """``(source, row indices)`` of every micro-batch of ``epoch``."""
        if self._cache is not None and self._cache[0] == epoch:
            return self._cache[1]
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        batches: list[tuple[int, list[int]]] = []
        for number, ex in enumerate(self.sources):
            order = torch.randperm(len(ex), generator=generator).tolist()
            for rows in no_duplicate_batches(order, self._keys[number], self.batch_size):
                if len(rows) >= 2:
                    batches.append((number, rows))
        shuffle = torch.randperm(len(batches), generator=generator).tolist()
        plan = [batches[i] for i in shuffle]
        self._cache = (epoch, plan)
        return plan

    def _locate(self, index: int) -> tuple[int, int]:
        """(epoch, position) of the ``index``-th micro-batch counted from the start."""
        epoch = 0
        while True:
            while len(self._sizes) <= epoch:
                self._sizes.append(len(self.epoch(len(self._sizes))))
            if index < self._sizes[epoch]:
                return epoch, index
            index -= self._sizes[epoch]
            epoch += 1

    def micro_batch(self, index: int) -> Batch:
        """The ``index``-th micro-batch counted from the start of training."""
        epoch, position = self._locate(index)
        source, rows = self.epoch(epoch)[position]
        ex = self.sources[source]
        related = self._related[source]
        return Batch(
            source=source,
            anchors=[ex.anchors[i] for i in rows],
            positives=[ex.positives[i] for i in rows],
            negatives=None if ex.negatives is None else [ex.negatives[i] for i in rows],
            scores=None if ex.scores is None else [ex.scores[i] for i in rows],
            related=None if related is None else [related[ex.anchors[i]] for i in rows],
        )
