"""Fine stage: the deep view of every document as one contiguous float32/float16 array.

A loaded index memory-maps its ``.npy`` file read-only as the base; rows added later go to
an in-memory tail (amortised growth), so an upsert never copies the mapped base into memory.
A freshly built index holds its rows in memory until it is saved and loaded again. Rows are gathered by
position for a shortlist and scored exactly (inner product of L2-normalised vectors).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from esrag.index.config import FineDType

__all__ = ["FineStore", "read_vectors"]

logger = logging.getLogger(__name__)

_CHUNK_ROWS = 65_536


def read_vectors(
    path: Path, *, dim: int, dtype: FineDType | str, count: int, mmap: bool = True
) -> np.ndarray:
    """The (count, dim) fine vectors of a ``.npy`` file (memory-mapped read-only with ``mmap``).

    Raises ``ValueError`` naming the file when it is unreadable or of the wrong shape or dtype.
    """
    want = np.dtype(FineDType(dtype).value)
    try:
        data = np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path}: unreadable fine vectors ({exc})") from exc
    if data.shape != (count, int(dim)) or data.dtype != want:
        raise ValueError(
            f"{path}: expected {want} vectors of shape ({count}, {int(dim)}), found {data.dtype} {data.shape}"
        )
    return data


def _top_k(scores: np.ndarray, rows: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` best (score, row) per query, unordered; among equal scores the lower rows
    (so that a tie at the k-th place is settled the same way however the rows are split).
    """
    part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    best_s = np.take_along_axis(scores, part, axis=1)
    best_r = np.take_along_axis(rows, part, axis=1)
    kth = best_s.min(axis=1)
    tied = np.isfinite(kth) & ((scores >= kth[:, None]).sum(axis=1) > k)
    for q in np.flatnonzero(tied).tolist():  # rare: a tie straddles the k-th place
        order = np.lexsort((rows[q], -scores[q]))[:k]
        best_s[q], best_r[q] = scores[q, order], rows[q, order]
    return best_s, best_r


class FineStore:
    """Append-only matrix of fine vectors (rows): a base part, memory-mapped after a load,
    and an in-memory tail that receives appended rows (so writing never copies the base).
    """

    def __init__(
        self, dim: int, dtype: FineDType | str = FineDType.FLOAT32, *, base: np.ndarray | None = None
    ) -> None:
        self.dim = int(dim)
        self.dtype = np.dtype(FineDType(dtype).value)
        if base is not None and (base.ndim != 2 or base.shape[1] != self.dim or base.dtype != self.dtype):
            raise ValueError(f"base must be {self.dtype} (n, {self.dim}), got {base.dtype} {base.shape}")
        self._base: np.ndarray = np.empty((0, self.dim), dtype=self.dtype) if base is None else base
        self._tail: np.ndarray = np.empty((0, self.dim), dtype=self.dtype)
        self._tail_n = 0

    def __len__(self) -> int:
        return self._base.shape[0] + self._tail_n

    @property
    def memory_mapped(self) -> bool:
        """Whether the base part is a read-only memory map of a saved ``.npy`` file."""
        return isinstance(self._base, np.memmap)

    def reserve(self, n: int) -> None:
        """Make room for ``n`` more rows now, so the next :meth:`append` of ``n`` allocates nothing
        (an insert reserves before it changes any store: running out of memory changes nothing).
        """
        need = self._tail_n + int(n)
        if need > self._tail.shape[0]:
            grown = np.empty((max(need, int(self._tail.shape[0] * 1.5) + 1024), self.dim), dtype=self.dtype)
            grown[: self._tail_n] = self._tail[: self._tail_n]
            self._tail = grown

    def append(self, vectors: np.ndarray) -> np.ndarray:
        """Append (n, dim) vectors to the in-memory tail; returns their row numbers."""
        vectors = np.asarray(vectors)
        n = vectors.shape[0]
        self.reserve(n)
        need = self._tail_n + n
        self._tail[self._tail_n : need] = vectors
        first = len(self)
        self._tail_n = need
        return np.arange(first, first + n, dtype=np.int64)

    def _block(self, start: int, stop: int) -> np.ndarray:
        """float32 copy of rows ``start:stop`` (contiguous row numbers)."""
        base_n = self._base.shape[0]
        parts = []
        if start < base_n:
            parts.append(self._base[start : min(stop, base_n)])
        if stop > base_n:
            parts.append(self._tail[max(start, base_n) - base_n : stop - base_n])
        return np.concatenate(parts).astype(np.float32, copy=False)

    def gather(self, rows: np.ndarray) -> np.ndarray:
        """float32 copies of the given rows (any shape of row numbers)."""
        rows = np.asarray(rows, dtype=np.int64)
        flat = rows.reshape(-1)
        base_n = self._base.shape[0]
        if not self._tail_n:
            out = np.asarray(self._base[flat], dtype=np.float32)
        elif not base_n:
            out = np.asarray(self._tail[flat], dtype=np.float32)
        else:
            out = np.empty((flat.size, self.dim), dtype=np.float32)
            in_base = flat < base_n
            out[in_base] = self._base[flat[in_base]]
            out[~in_base] = self._tail[flat[~in_base] - base_n]
        return out.reshape(*rows.shape, self.dim)

    def score(self, queries: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """Exact scores of query i against rows[i, j]; rows must be valid (>= 0)."""
        vectors = self.gather(rows)  # (Q, S, dim)
        return np.einsum("qsd,qd->qs", vectors, queries.astype(np.float32, copy=False))

    def topk(
        self,
        queries: np.ndarray,
        k: int,
        *,
        candidates: np.ndarray | None = None,
        alive: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Exact top-``k`` (scores, rows) over ``candidates`` rows (default: every ``alive`` row).

        Scans in chunks so memory stays bounded; missing results have row -1, score -inf.
        """
        q = np.ascontiguousarray(queries, dtype=np.float32)
        best_s = np.full((q.shape[0], k), -np.inf, dtype=np.float32)
        best_r = np.full((q.shape[0], k), -1, dtype=np.int64)
        total = len(self) if candidates is None else candidates.size
        for start in range(0, total, _CHUNK_ROWS):
            if candidates is None:
                stop = min(start + _CHUNK_ROWS, total)
                rows = np.arange(start, stop, dtype=np.int64)
                block = self._block(start, stop)
                scores = q @ block.T
                if alive is not None:
                    scores[:, ~alive[start:stop]] = -np.inf
            else:
                rows = candidates[start : start + _CHUNK_ROWS]
                scores = q @ self.gather(rows).T
            all_s = np.concatenate([best_s, scores], axis=1)
            all_r = np.concatenate([best_r, np.broadcast_to(rows, scores.shape)], axis=1)
            if all_s.shape[1] > k:
                best_s, best_r = _top_k(all_s, all_r, k)
            else:
                best_s, best_r = all_s, all_r
        order = np.lexsort((best_r, -best_s), axis=1)  # ties: lower row first
        best_s = np.take_along_axis(best_s, order, axis=1)
        best_r = np.take_along_axis(best_r, order, axis=1)
        best_r[~np.isfinite(best_s)] = -1
        return best_s, best_r

    # ---------------------------------------------------------------- storage
    def write(self, path: Path, rows: np.ndarray) -> None:
        """Write the given rows, in order, as one ``.npy`` file (chunked, bounded memory).

        Ordinary buffered writes, not a memory map: a full disk is an ``OSError`` here, not
        a SIGBUS later.
        """
        header = {
            "descr": np.lib.format.dtype_to_descr(self.dtype),
            "fortran_order": False,
            "shape": (int(rows.size), self.dim),
        }
        with open(path, "wb") as handle:
            np.lib.format.write_array_header_1_0(handle, header)
            for start in range(0, rows.size, _CHUNK_ROWS):
                part = rows[start : start + _CHUNK_ROWS]
                handle.write(np.ascontiguousarray(self.gather(part), dtype=self.dtype).tobytes())

    @classmethod
    def read(
        cls, path: Path, *, dim: int, dtype: FineDType | str, count: int, mmap: bool = True
    ) -> FineStore:
        """Open a ``.npy`` file written by :meth:`write` (memory-mapped read-only with ``mmap``)."""
        return cls(dim, dtype, base=read_vectors(path, dim=dim, dtype=dtype, count=count, mmap=mmap))
