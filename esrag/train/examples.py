"""Examples: the rows of one training source, as plain lists of texts (and scores)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

__all__ = ["Examples"]


@dataclass(frozen=True)
class Examples:
    """Rows of one source: (anchor, positive[, negative]) or (text1, text2, score)."""

    source: str
    anchors: list[str]
    positives: list[str]
    negatives: list[str] | None = None
    scores: list[float] | None = None

    def __len__(self) -> int:
        return len(self.anchors)

    @property
    def scored(self) -> bool:
        """Whether the rows carry gold scores (CoSENT) rather than pairs (InfoNCE)."""
        return self.scores is not None

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
