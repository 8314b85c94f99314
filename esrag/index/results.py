"""What index reads return: search hits and stored documents."""

from __future__ import annotations

from dataclasses import KW_ONLY, dataclass, field
from typing import Any

__all__ = ["IndexedDocument", "SearchResult"]


@dataclass(frozen=True)
class SearchResult:
    """Per query, best first: document ids and their scores (cosine similarity).

    ``exited``: with an early-exit margin, per query whether it was answered from the coarse
    shortlist (coarse scores; its encoder pass stopped at the coarse layer); empty when no
    exit test ran.
    """

    ids: list[list[str]]
    scores: list[list[float]]
    _: KW_ONLY
    mode: str | None = None
    """The mode the search ran in (``"cascade"``, ``"coarse"``, ``"fine"``): ``"coarse"`` for a
    cascade search of a coarse-only index, whose fine vectors are still being filled in."""
    exited: list[bool] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.ids)


@dataclass(frozen=True)
class IndexedDocument:
    """A stored document: its id, text and (a copy of its) metadata."""

    id: str
    text: str
    metadata: dict[str, Any]
