"""The held-out slice: which training queries are kept out, and what they are scored against.

Held out are whole anchors (every row of a query goes to the same side), so no held-out
query is ever in a training batch. With ``eval_fraction=None`` (the default) the slice is
10% of each labelled source's distinct anchors, at most :data:`AUTO_MAX`, and only when that
gives at least :data:`AUTO_MIN` (fewer would make selection noise); label-free pairs mined
from a corpus are never held out. An explicit fraction is honoured as given.

Each held-out part becomes a slice scored the way ``esrag eval`` scores an index:

- :class:`RetrievalSlice`: the held-out queries ranked against the source's documents (a
  BEIR corpus, else every distinct positive of the source, training rows included), up to
  ``eval_docs`` of them: every document judged for a held-out query, then a seeded random
  sample of the rest. Relevance is the qrels' grade (1 for plain pairs).
- :class:`ScoredSlice`: held-out (text1, text2, score) rows, scored by Spearman.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Sequence
from dataclasses import dataclass

from esrag.train.examples import Examples

__all__ = [
    "AUTO_FRACTION",
    "AUTO_MAX",
    "AUTO_MIN",
    "RetrievalSlice",
    "ScoredSlice",
    "Slice",
    "Split",
    "build_slices",
    "holdout_count",
    "pick_anchors",
    "split_by_anchors",
    "split_sources",
]

logger = logging.getLogger(__name__)

AUTO_FRACTION = 0.1
AUTO_MAX = 300
AUTO_MIN = 20


def holdout_count(distinct: int, fraction: float | None) -> int:
    """How many of ``distinct`` anchors to hold out (``None``: the automatic rule above)."""
    if fraction is None:
        count = min(AUTO_MAX, round(AUTO_FRACTION * distinct))
        return count if count >= AUTO_MIN else 0
    if fraction <= 0:
        return 0
    return max(1, round(fraction * distinct))


def pick_anchors(examples: Examples, count: int, seed: int) -> frozenset[str]:
    """``count`` distinct anchors of ``examples``, a seeded random choice."""
    distinct = sorted(set(examples.anchors))
    random.Random(seed).shuffle(distinct)
    return frozenset(distinct[:count])


def split_by_anchors(examples: Examples, held: frozenset[str]) -> tuple[Examples, Examples]:
    """(rows whose anchor is not in ``held``, rows whose anchor is)."""
    train = [i for i, a in enumerate(examples.anchors) if a not in held]
    evaluation = [i for i, a in enumerate(examples.anchors) if a in held]
    return examples.select(train), examples.select(evaluation)


@dataclass(frozen=True)
class Split:
    """Training sources after holding out, the held-out parts, and the held-out anchors.

    ``pairs[i]`` is ``(training part, held-out part or None)`` of source i.
    """

    pairs: list[tuple[Examples, Examples | None]]
    anchors: tuple[str, ...]

    @property
    def train(self) -> list[Examples]:
        """The training part of every source."""
        return [train for train, _ in self.pairs]

    @property
    def held(self) -> list[Examples]:
        """The non-empty held-out parts."""
        return [held for _, held in self.pairs if held is not None and len(held)]


def split_sources(
    sources: Sequence[Examples], fraction: float | None, seed: int, saved: Sequence[str] | None = None
) -> Split:
    """Hold out anchors of each labelled source (``saved``: exactly these, as a resumed run)."""
    pairs: list[tuple[Examples, Examples | None]] = []
    anchors: set[str] = set()
    for ex in sources:
        if ex.mined:
            pairs.append((ex, None))
            continue
        if saved is not None:
            held = frozenset(saved) & set(ex.anchors)
        else:
            held = pick_anchors(ex, holdout_count(len(set(ex.anchors)), fraction), seed)
        if not held:
            pairs.append((ex, None))
            continue
        train, evaluation = split_by_anchors(ex, held)
        pairs.append((train, evaluation))
        anchors |= held
    return Split(pairs, tuple(sorted(anchors)))


@dataclass(frozen=True)
class RetrievalSlice:
    """Held-out queries, the documents they are ranked against, and graded relevance.

    ``qrels`` maps a query's position (as a string) to ``{document position: grade}``.
    """

    source: str
    queries: list[str]
    docs: list[str]
    qrels: dict[str, dict[str, int]]

    def __len__(self) -> int:
        return len(self.queries)


@dataclass(frozen=True)
class ScoredSlice:
    """Held-out scored pairs: Spearman of the cosine with ``gold``."""

    source: str
    left: list[str]
    right: list[str]
    gold: list[float]

    def __len__(self) -> int:
        return len(self.gold)


Slice = RetrievalSlice | ScoredSlice


def _judgments(held: Examples) -> dict[str, dict[str, int]]:
    judged: dict[str, dict[str, int]] = {}
    for anchor, positive in zip(held.anchors, held.positives, strict=True):
        judged.setdefault(anchor, {})[positive] = 1
    for anchor in judged:
        for doc, grade in (held.judged or {}).get(anchor, {}).items():
            if grade > 0:
                judged[anchor][doc] = grade
    return judged


def _pool(held: Examples, train: Examples | None) -> list[str]:
    if held.corpus is not None:
        return list(dict.fromkeys(held.corpus))
    texts: list[str] = []
    for part in (train, held):
        if part is not None:
            texts += part.positives + (part.negatives or [])
    return list(dict.fromkeys(texts))


def retrieval_slice(held: Examples, train: Examples | None, max_docs: int, seed: int) -> RetrievalSlice:
    """The :class:`RetrievalSlice` of a held-out pair part (``train``: its source's training part)."""
    judged = _judgments(held)
    wanted = list(dict.fromkeys(doc for docs in judged.values() for doc in docs))
    pool = _pool(held, train)
    known = set(wanted)
    rest = [doc for doc in pool if doc not in known]
    room = max(0, max_docs - len(wanted))
    if len(rest) > room:
        rest = random.Random(seed).sample(rest, room)
    docs = wanted + rest
    position = {doc: i for i, doc in enumerate(docs)}
    queries = sorted(judged)
    qrels = {
        str(q): {str(position[doc]): grade for doc, grade in judged[query].items()}
        for q, query in enumerate(queries)
    }
    return RetrievalSlice(held.source, queries, docs, qrels)


def build_slices(parts: Sequence[tuple[Examples | None, Examples]], max_docs: int, seed: int) -> list[Slice]:
    """One slice per ``(training part or None, held-out part)``."""
    slices: list[Slice] = []
    for train, held in parts:
        if held.scores is not None:
            slices.append(
                ScoredSlice(held.source, list(held.anchors), list(held.positives), list(held.scores))
            )
        else:
            slices.append(retrieval_slice(held, train, max_docs, seed))
    for item in slices:
        if isinstance(item, RetrievalSlice):
            logger.info(
                "held-out %s: %d queries against %d documents", item.source, len(item.queries), len(item.docs)
            )
        else:
            logger.info("held-out %s: %d scored pairs", item.source, len(item.gold))
    return slices
