"""Incremental sync: make an index hold exactly a given set of documents.

:func:`sync` diffs documents against an index by content hash (text + metadata), deletes
the stored documents that vanished, encodes and upserts only the new and changed ones, and
reports what it did. ``esrag build`` on an existing index folder is this function plus a
save.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any, Protocol

from esrag.data.corpus import content_hash

__all__ = ["SyncReport", "sync"]

_LOOKUP_BATCH = 1000


class _Doc(Protocol):
    id: str
    text: str
    metadata: Mapping[str, Any]


class _Index(Protocol):  # the part of CascadeIndex that sync uses
    def ids(self) -> list[str]: ...
    def get_by_ids(self, ids: list[str]) -> list[Any]: ...
    def delete(self, ids: Iterable[str]) -> int: ...
    def add(
        self,
        texts: list[str],
        ids: list[str] | None = None,
        metadatas: list[dict[str, Any]] | None = None,
        *,
        batch_size: int = 64,
        show_progress_bar: bool | None = None,
    ) -> list[str]: ...


@dataclass(frozen=True)
class SyncReport:
    """Ids added (new), changed (re-encoded), removed (no longer in the documents) and kept."""

    added: list[str]
    changed: list[str]
    removed: list[str]
    kept: list[str]

    @property
    def encoded(self) -> int:
        """Documents that went through the encoder."""
        return len(self.added) + len(self.changed)

    @property
    def modified(self) -> bool:
        """Whether the index changed."""
        return bool(self.added or self.changed or self.removed)

    def to_json(self) -> dict[str, Any]:
        """The report as a JSON object (the id lists and their counts)."""
        return {**asdict(self), "encoded": self.encoded}


def sync(
    index: _Index,
    documents: Iterable[_Doc],
    *,
    delete_missing: bool = True,
    batch_size: int = 64,
    show_progress_bar: bool | None = None,
) -> SyncReport:
    """Make ``index`` hold ``documents`` (objects with ``id``, ``text``, ``metadata``).

    New ids are added, ids whose content hash differs are re-encoded and replaced, stored
    ids absent from ``documents`` are deleted (unless ``delete_missing`` is False) and the
    rest are left as they are. Document ids must be unique.
    """
    docs = list(documents)
    seen: set[str] = set()
    for doc in docs:
        if doc.id in seen:
            raise ValueError(f"sync: document id {doc.id!r} appears twice")
        seen.add(doc.id)
    stored_ids = set(index.ids())
    added, changed, kept, todo = [], [], [], []
    for start in range(0, len(docs), _LOOKUP_BATCH):
        batch = docs[start : start + _LOOKUP_BATCH]
        stored = {d.id: d for d in index.get_by_ids([d.id for d in batch if d.id in stored_ids])}
        for doc in batch:
            old = stored.get(doc.id)
            if old is None:
                added.append(doc.id)
                todo.append(doc)
            elif content_hash(old.text, old.metadata) != content_hash(doc.text, doc.metadata):
                changed.append(doc.id)
                todo.append(doc)
            else:
                kept.append(doc.id)
    removed = [i for i in index.ids() if i not in seen] if delete_missing else []
    if removed:
        index.delete(removed)
    if todo:
        index.add(
            [d.text for d in todo],
            ids=[d.id for d in todo],
            metadatas=[dict(d.metadata) for d in todo],
            batch_size=batch_size,
            show_progress_bar=show_progress_bar,
        )
    return SyncReport(added, changed, removed, kept)
