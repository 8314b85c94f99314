"""The state of a fitted cascade index as one value, and the writes and reads on it.

:class:`IndexState` is the unit that is built, searched, saved, loaded and rebuilt: the
configuration, the fitted coarse transform, the coarse FAISS stage, the fine store, the doc
store and the row map. Functions here take a state and change its parts or read them;
none of them knows about :class:`~esrag.index.cascade.CascadeIndex` (which adds the lock
and the embedder on top) or about the on-disk format (:mod:`esrag.index.format`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from esrag.index.batch import DocBatch, concat_batches, concat_query
from esrag.index.coarse import CoarseIndex
from esrag.index.config import CascadeConfig
from esrag.index.docstore import DocStore
from esrag.index.fine import FineStore
from esrag.index.fit import fit_coarse
from esrag.index.query import QueryMap, QuerySetup, fit_query_map
from esrag.index.results import IndexedDocument
from esrag.index.rows import RowMap, checked_coarse_ids
from esrag.index.transforms import FittedTransform
from esrag.validation import check_dim

__all__ = [
    "IndexState",
    "consistency_problem",
    "documents",
    "empty_stats",
    "fine_vectors_of",
    "insert",
    "live_ids",
    "new_state",
    "remove",
    "state_stats",
]


@dataclass(frozen=True, eq=False)
class IndexState:
    """Everything a fitted index holds. The parts are mutable stores; the state itself is
    replaced (``dataclasses.replace``) when its configuration or coarse stage changes.
    """

    config: CascadeConfig
    transform: FittedTransform
    coarse: CoarseIndex
    fine: FineStore
    docs: DocStore
    rows: RowMap
    query_map: QueryMap | None = None
    """How shallow queries reach the documents' spaces (``None``: queries run full depth)."""

    @property
    def source_dim(self) -> int:
        """Width of the coarse source vectors (before the transform)."""
        return int(self.transform.source_dim)

    @property
    def fine_dim(self) -> int:
        """Width of the fine vectors."""
        return int(self.fine.dim)

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def coarse_only(self) -> bool:
        """Whether some rows still lack their fine vector (a shallow-first build being filled in:
        the fine store holds the first rows' vectors, the last ones are pending).
        """
        return len(self.fine) < self.rows.num_rows

    def mode_line(self) -> str:
        """Which search mode is in force, in words."""
        if not self.coarse_only:
            return "cascade"
        return f"coarse-only: fine vectors for {len(self.fine)} of {self.rows.num_rows} documents"


def new_state(
    config: CascadeConfig,
    batches: Sequence[DocBatch],
    *,
    same_vectors: bool,
    query: QuerySetup | None = None,
) -> IndexState:
    """An empty state whose coarse stage (and, for shallow queries ``query``, query map) is
    fitted on ``batches`` (which are not inserted).
    """
    source, fine = concat_batches(batches)
    transform, coarse = fit_coarse(config, source, fine, same_vectors=same_vectors)
    query_map = None
    if query is not None:
        sample = slice(0, config.train_size)
        shallow = concat_query(batches)
        query_map = fit_query_map(
            query,
            None if shallow is None else shallow[sample],
            source[sample],
            fine[sample],
            ridge=config.adapter_ridge,
        )
    fine_store = FineStore(fine.shape[1], config.fine_dtype)
    return IndexState(config, transform, coarse, fine_store, DocStore(), RowMap(), query_map)


def insert(state: IndexState, batch: DocBatch, coarse_ids: np.ndarray | None = None) -> None:
    """Upsert one checked batch: replaces documents whose ids are already stored.

    All or nothing: everything that can fail (shapes, the transform, the coarse ids, the
    memory for the fine rows, the FAISS add) runs before the first store that cannot undo it
    is changed, so a batch that raises leaves the state as it was. ``coarse_ids``: the
    documents' coarse ids when the caller allocates them (see :meth:`RowMap.add`), else the
    next ones.
    """
    check_dim("coarse_source", batch.source, state.source_dim)
    check_dim("fine", batch.fine, state.fine_dim)
    coarse_vectors = state.transform(batch.source)
    state.fine.reserve(len(batch))
    first = state.rows.next_coarse_id
    if coarse_ids is None:
        new_coarse = np.arange(first, first + len(batch), dtype=np.int64)
    else:
        new_coarse = checked_coarse_ids(coarse_ids, len(batch), first)
    state.coarse.add(coarse_vectors, new_coarse)  # the first change; under these unused ids
    remove(state, batch.ids)
    rows, coarse_ids = state.rows.add(batch.ids, new_coarse)
    fine_rows = state.fine.append(batch.fine)
    doc_rows = [
        state.docs.append(text, meta) for text, meta in zip(batch.texts, batch.metadatas, strict=True)
    ]
    agree = np.array_equal(rows, fine_rows) and rows.tolist() == doc_rows
    if not (agree and np.array_equal(coarse_ids, new_coarse)):  # pragma: no cover - invariant
        raise RuntimeError("row map, coarse, fine and doc stores disagree on row numbers")


def remove(state: IndexState, ids: Iterable[str]) -> int:
    """Delete the stored ones among ``ids``; returns how many were removed."""
    rows, coarse_ids = state.rows.remove(ids)
    state.coarse.remove(coarse_ids)
    for row in rows.tolist():
        state.docs.remove(row)
    return int(rows.size)


def consistency_problem(state: IndexState) -> str | None:
    """What disagrees between the state's parts (what a save checks before writing), or ``None``."""
    rows, live = state.rows.num_rows, len(state.rows)
    coarse_live = state.coarse.ntotal - len(state.coarse.tombstones)
    if state.coarse_only and live != rows:
        return f"a coarse-only index has {rows - live} deleted rows (no write is allowed while it fills in)"
    for what, count, want in (
        ("live coarse vectors", coarse_live, live),
        ("fine rows", len(state.fine), len(state.fine) if state.coarse_only else rows),  # filled: the first
        ("doc store rows", len(state.docs), rows),
    ):
        if count != want:
            return f"{count} {what}, the row map expects {want}"
    return None


def live_ids(state: IndexState) -> list[str]:
    """Live document ids in row order."""
    return state.rows.doc_ids(state.rows.live().tolist())


def documents(state: IndexState, ids: Sequence[str]) -> list[IndexedDocument]:
    """Stored documents for ``ids``, in that order; unknown ids are skipped."""
    return [
        IndexedDocument(doc_id, state.docs.text(row), state.docs.metadata(row))
        for doc_id, row in state.rows.found(ids)
    ]


def fine_vectors_of(state: IndexState, ids: Sequence[str]) -> tuple[list[str], np.ndarray]:
    """(found ids, their fine vectors as float32 (n, fine_dim)); unknown ids are skipped."""
    found = state.rows.found(ids)
    if not found:
        return [], np.zeros((0, state.fine_dim), dtype=np.float32)
    pending = [i for i, row in found if row >= len(state.fine)]
    if pending:
        raise ValueError(
            f"{len(pending)} of these documents (e.g. {pending[0]!r}) have no fine vector yet "
            f"({state.mode_line()}); fill them in first (CascadeIndex.fill_fine)"
        )
    return [i for i, _ in found], state.fine.gather(np.array([r for _, r in found], dtype=np.int64))


def state_stats(state: IndexState) -> dict[str, Any]:
    """Counts and settings of a fitted state (see :meth:`CascadeIndex.stats`)."""
    return {
        "documents": len(state.rows),
        "rows": state.rows.num_rows,
        "fine_vectors": len(state.fine),
        "mode": state.mode_line(),
        "tombstones": len(state.coarse.tombstones),
        "index_type": state.config.index_type,
        "transform": state.transform.kind.value,
        "source_dim": state.source_dim,
        "coarse_dim": state.transform.dim,
        "fine_dim": state.fine_dim,
        "fine_dtype": state.config.fine_dtype.value,
        "fine_memory_mapped": state.fine.memory_mapped,
        "query_layer": state.query_map.layer if state.query_map is not None else None,
        "query_map": state.query_map.kind.value if state.query_map is not None else None,
    }


def empty_stats(config: CascadeConfig, source_dim: int | None, fine_dim: int | None) -> dict[str, Any]:
    """:func:`state_stats` of an index that holds nothing yet."""
    return {
        "documents": 0,
        "rows": 0,
        "fine_vectors": 0,
        "mode": "cascade",
        "tombstones": 0,
        "index_type": config.index_type,
        "transform": None,
        "source_dim": source_dim,
        "coarse_dim": None,
        "fine_dim": fine_dim,
        "fine_dtype": config.fine_dtype.value,
        "fine_memory_mapped": False,
        "query_layer": config.query_layer,
        "query_map": None,
    }
