"""The row map: which document id lives in which row, and under which coarse (FAISS) id.

A *row* is a document's position in the fine store and the doc store (both grow in
lockstep, one row per stored document, deleted rows stay as holes until the next save
compacts them). A *coarse id* is the int64 key of the document's vector inside the FAISS
coarse index; an upsert gives the new version a fresh coarse id, so a coarse id is never
reused. Rows and coarse ids are allocated together in increasing order, and a save keeps
the row order, so coarse ids increase with the row: a coarse id's row is found by binary
search, without a table sized by the largest id. :class:`RowMap` is the only owner of that
bookkeeping.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

__all__ = ["MAX_COARSE_ID", "RowMap", "checked_coarse_ids"]

MAX_COARSE_ID = 2**62
"""Coarse ids stay below this (FAISS ids are int64; the margin keeps ``next_id + n`` exact)."""


def _grow(array: np.ndarray, size: int, fill: int | bool) -> np.ndarray:
    """``array`` with room for at least ``size`` entries (amortised growth, new ones ``fill``)."""
    if size <= array.size:
        return array
    out = np.full(max(size, int(array.size * 1.5) + 1024), fill, dtype=array.dtype)
    out[: array.size] = array
    return out


def checked_coarse_ids(coarse_ids: np.ndarray, n: int, first: int) -> np.ndarray:
    """Given coarse ids for ``n`` new rows: int64, increasing, none below ``first``."""
    coarse = np.asarray(coarse_ids, dtype=np.int64)
    if coarse.shape != (n,):
        raise ValueError(f"RowMap.add: expected {n} coarse ids, got shape {coarse.shape}")
    if n and (coarse[0] < first or (n > 1 and not (np.diff(coarse) > 0).all())):
        raise ValueError(f"RowMap.add: coarse ids must increase from at least {first}")
    return coarse


class RowMap:
    """Document id ↔ row ↔ coarse id, with the set of live rows."""

    def __init__(self) -> None:
        self._row_of: dict[str, int] = {}
        self._id_of_row: list[str | None] = []
        self._coarse_of_row = np.zeros(0, dtype=np.int64)
        self._alive = np.zeros(0, dtype=bool)
        self._next_coarse = 0

    # ------------------------------------------------------------------ reading
    def __len__(self) -> int:
        """Live documents."""
        return len(self._row_of)

    def __contains__(self, doc_id: object) -> bool:
        return doc_id in self._row_of

    @property
    def num_rows(self) -> int:
        """Rows allocated so far, deleted ones included."""
        return len(self._id_of_row)

    @property
    def next_coarse_id(self) -> int:
        """The coarse id the next added document gets."""
        return self._next_coarse

    def row_of(self, doc_id: str) -> int | None:
        """The row of a live document, or ``None``."""
        return self._row_of.get(doc_id)

    def found(self, doc_ids: Iterable[str]) -> list[tuple[str, int]]:
        """``(id, row)`` of the live ones among ``doc_ids``, in the order given."""
        return [(i, self._row_of[i]) for i in doc_ids if i in self._row_of]

    def doc_id(self, row: int) -> str:
        """The id of a live row."""
        doc_id = self._id_of_row[row]
        if doc_id is None:
            raise KeyError(f"row {row} holds no live document")
        return doc_id

    def doc_ids(self, rows: Iterable[int]) -> list[str]:
        """The ids of live rows, in the order given."""
        return [self.doc_id(r) for r in rows]

    def live(self) -> np.ndarray:
        """The live rows, ascending (int64)."""
        return np.flatnonzero(self._alive[: self.num_rows]).astype(np.int64)

    def alive_mask(self) -> np.ndarray:
        """Bool mask over the allocated rows: True where the row is live (read-only view)."""
        view = self._alive[: self.num_rows]
        view.flags.writeable = False
        return view

    def coarse_ids(self, rows: np.ndarray) -> np.ndarray:
        """The coarse ids of ``rows`` (any shape)."""
        return self._coarse_of_row[np.asarray(rows, dtype=np.int64)]

    def rows_of_coarse(self, coarse_ids: np.ndarray) -> np.ndarray:
        """Rows of coarse ids (any shape); -1 for negative (missing) or deleted ids."""
        ids = np.asarray(coarse_ids, dtype=np.int64)
        n = self.num_rows
        if n == 0:
            return np.full(ids.shape, -1, dtype=np.int64)
        rows = np.minimum(np.searchsorted(self._coarse_of_row[:n], ids), n - 1)
        hit = (ids >= 0) & (self._coarse_of_row[rows] == ids) & self._alive[rows]
        return np.where(hit, rows, -1).astype(np.int64)

    # ------------------------------------------------------------------ writing
    def add(
        self, doc_ids: Sequence[str], coarse_ids: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Allocate the next rows and coarse ids for new documents; returns ``(rows, coarse ids)``.

        The ids must be distinct and not live (remove an old version first). ``coarse_ids``:
        the coarse ids to use instead of the next ones (a shard of a
        :class:`~esrag.index.sharded.ShardedIndex` gets ids from one counter shared by all
        shards); they must increase and be at least :attr:`next_coarse_id`.
        """
        present = [i for i in doc_ids if i in self._row_of]
        if present or len(set(doc_ids)) != len(doc_ids):
            raise ValueError(
                f"RowMap.add: ids already present or repeated: {present[:3] or list(doc_ids)[:3]}"
            )
        n = len(doc_ids)
        first_row, first_coarse = self.num_rows, self._next_coarse
        if first_coarse + n > MAX_COARSE_ID:
            raise OverflowError(f"RowMap.add: coarse ids would pass {MAX_COARSE_ID}; rebuild the index")
        rows = np.arange(first_row, first_row + n, dtype=np.int64)
        if coarse_ids is None:
            coarse = np.arange(first_coarse, first_coarse + n, dtype=np.int64)
        else:
            coarse = checked_coarse_ids(coarse_ids, n, first_coarse)
        self._alive = _grow(self._alive, first_row + n, False)
        self._coarse_of_row = _grow(self._coarse_of_row, first_row + n, -1)
        self._alive[rows] = True
        self._coarse_of_row[rows] = coarse
        self._id_of_row.extend(doc_ids)
        self._row_of.update(zip(doc_ids, rows.tolist(), strict=True))
        self._next_coarse = int(coarse[-1]) + 1 if n else self._next_coarse
        return rows, coarse

    def remove(self, doc_ids: Iterable[str]) -> tuple[np.ndarray, np.ndarray]:
        """Forget the live ones among ``doc_ids``; returns their ``(rows, coarse ids)``."""
        rows = np.array([self._row_of.pop(i) for i in dict.fromkeys(doc_ids) if i in self._row_of], np.int64)
        coarse = self._coarse_of_row[rows]
        self._alive[rows] = False
        for row in rows.tolist():
            self._id_of_row[row] = None
        return rows, coarse

    # ------------------------------------------------------------------ storage
    def write_coarse_ids(self, path: Path, rows: np.ndarray) -> None:
        """Write the coarse ids of ``rows`` (in that order) as an int64 ``.npy`` file."""
        np.save(path, self.coarse_ids(rows), allow_pickle=False)

    @classmethod
    def restore(cls, doc_ids: Sequence[str], coarse_ids: np.ndarray, next_coarse_id: int) -> RowMap:
        """The map of a compacted folder: row ``i`` is ``doc_ids[i]`` under ``coarse_ids[i]``.

        Raises ``ValueError`` naming the problem for repeated ids, coarse ids outside
        ``0..next_coarse_id - 1`` or not increasing with the row. Allocates nothing sized by
        ``next_coarse_id``.
        """
        coarse_ids = np.asarray(coarse_ids)
        if coarse_ids.dtype != np.int64 or coarse_ids.shape != (len(doc_ids),):
            raise ValueError(
                f"expected int64 ids of shape ({len(doc_ids)},), got {coarse_ids.dtype} {coarse_ids.shape}"
            )
        if coarse_ids.size and (coarse_ids.min() < 0 or coarse_ids.max() >= next_coarse_id):
            raise ValueError(f"ids outside 0..{next_coarse_id - 1}")
        if np.unique(coarse_ids).size != coarse_ids.size:
            raise ValueError("duplicate ids")
        if coarse_ids.size > 1 and not (np.diff(coarse_ids) > 0).all():
            raise ValueError("ids must increase with the row (the order esrag writes them in)")
        if len(set(doc_ids)) != len(doc_ids):
            raise ValueError("duplicate document ids")
        out = cls()
        n = len(doc_ids)
        out._id_of_row = list(doc_ids)
        out._row_of = {doc_id: row for row, doc_id in enumerate(doc_ids)}
        out._alive = np.ones(n, dtype=bool)
        out._coarse_of_row = coarse_ids.copy()
        out._next_coarse = int(next_coarse_id)
        return out
