"""What index reads return: search hits and stored documents."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["IndexedDocument", "SearchResult"]


@dataclass(frozen=True)
class SearchResult:
    """Per query, best first: document ids and their scores (cosine similarity)."""

    ids: list[list[str]]
    scores: list[list[float]]
    mode: str | None = None
    """The mode the search ran in (``"cascade"``, ``"coarse"``, ``"fine"``): ``"coarse"`` for a
    cascade search of a coarse-only index, whose fine vectors are still being filled in."""

    def __len__(self) -> int:
        return len(self.ids)


@dataclass(frozen=True)
class IndexedDocument:
    """A stored document: its id, text and (a copy of its) metadata."""

    id: str
    text: str
    metadata: dict[str, Any]
