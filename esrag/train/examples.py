"""Examples: the rows of one training source, as plain lists of texts (and scores)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

__all__ = ["Examples"]


@dataclass(frozen=True)
class Examples:
    """Rows of one source: (anchor, positive[, negative]) or (text1, text2, score).

    ``judged`` (qrels sources) maps an anchor to every document judged relevant to it
    (``{text: grade}``, grade > 0), including those below ``min_grade`` that are not rows:
    none of them may serve as a negative for that anchor. ``corpus`` is the collection the
    positives come from (a BEIR corpus), for held-out scoring and hard-negative mining;
    ``mined`` is True for label-free pairs mined from a corpus (never held out).
    """

    source: str
    anchors: list[str]
    positives: list[str]
    negatives: list[str] | None = None
    scores: list[float] | None = None
    judged: Mapping[str, Mapping[str, int]] | None = None
    corpus: Sequence[str] | None = None
    mined: bool = False

    def __len__(self) -> int:
        return len(self.anchors)

    @property
    def scored(self) -> bool:
        """Whether the rows carry gold scores (CoSENT) rather than pairs (InfoNCE)."""
        return self.scores is not None

    def relevant(self) -> dict[str, frozenset[str]]:
        """Anchor → every text that is a right answer for it: its rows' positives and judged documents."""
        found: dict[str, set[str]] = {}
        for anchor, positive in zip(self.anchors, self.positives, strict=True):
            found.setdefault(anchor, set()).add(positive)
        for anchor, docs in (self.judged or {}).items():
            if anchor in found:
                found[anchor].update(doc for doc, grade in docs.items() if grade > 0)
        return {anchor: frozenset(texts) for anchor, texts in found.items()}

    def select(self, indices: list[int]) -> Examples:
        """The rows at ``indices``, in that order."""

        def pick(values: list[Any] | None) -> list[Any] | None:
            return None if values is None else [values[i] for i in indices]

        return replace(
            self,
            anchors=pick(self.anchors),
            positives=pick(self.positives),
            negatives=pick(self.negatives),
            scores=pick(self.scores),
        )
