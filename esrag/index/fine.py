"""Fine stage: the deep view of every document as one contiguous float32/float16 array.

Rows are appended in memory (amortised growth); a loaded index memory-maps its ``.npy``
file read-only and copies it into memory only on the first write. Rows are gathered by
position for a shortlist and scored exactly (inner product of L2-normalised vectors).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from esrag.index.config import FineDType

__all__ = ["FineStore"]

logger = logging.getLogger(__name__)

_CHUNK_ROWS = 65_536


class FineStore:
    """Append-only matrix of fine vectors (rows), optionally memory-mapped."""

    def __init__(self, dim: int, dtype: FineDType | str = FineDType.FLOAT32) -> None:
        self.dim = int(dim)
        self.dtype = np.dtype(FineDType(dtype).value)
        self._data: np.ndarray = np.empty((0, self.dim), dtype=self.dtype)
        self._n = 0

    def __len__(self) -> int:
        return self._n

    @property
    def memory_mapped(self) -> bool:
        return isinstance(self._data, np.memmap)

    def rows(self) -> np.ndarray:
        """The filled rows (a view; do not keep it across writes)."""
        return self._data[: self._n]

    def append(self, vectors: np.ndarray) -> np.ndarray:
        """Append (n, dim) vectors; returns their row numbers."""
        vectors = np.asarray(vectors)
        n = vectors.shape[0]
        need = self._n + n
        if need > self._data.shape[0] or self.memory_mapped:
            capacity = max(need, int(self._data.shape[0] * 1.5) + 1024)
            grown = np.empty((capacity, self.dim), dtype=self.dtype)
            if self.memory_mapped:
                logger.info("copying %d memory-mapped fine vectors into memory for writing", self._n)
            grown[: self._n] = self._data[: self._n]
            self._data = grown
        self._data[self._n : need] = vectors
        rows = np.arange(self._n, need, dtype=np.int64)
        self._n = need
        return rows

    def gather(self, rows: np.ndarray) -> np.ndarray:
        """float32 copies of the given rows (any shape of row numbers)."""
        rows = np.asarray(rows, dtype=np.int64)
        out = np.asarray(self._data[rows.reshape(-1)], dtype=np.float32)
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
        total = self._n if candidates is None else candidates.size
        for start in range(0, total, _CHUNK_ROWS):
            if candidates is None:
                stop = min(start + _CHUNK_ROWS, total)
                rows = np.arange(start, stop, dtype=np.int64)
                block = np.asarray(self._data[start:stop], dtype=np.float32)
                scores = q @ block.T
                if alive is not None:
                    scores[:, ~alive[start:stop]] = -np.inf
            else:
                rows = candidates[start : start + _CHUNK_ROWS]
                scores = q @ self.gather(rows).T
            all_s = np.concatenate([best_s, scores], axis=1)
            all_r = np.concatenate([best_r, np.broadcast_to(rows, scores.shape)], axis=1)
            if all_s.shape[1] > k:
                part = np.argpartition(-all_s, k - 1, axis=1)[:, :k]
                best_s = np.take_along_axis(all_s, part, axis=1)
                best_r = np.take_along_axis(all_r, part, axis=1)
            else:
                best_s, best_r = all_s, all_r
        order = np.lexsort((best_r, -best_s), axis=1)  # ties: lower row first
        best_s = np.take_along_axis(best_s, order, axis=1)
        best_r = np.take_along_axis(best_r, order, axis=1)
        best_r[~np.isfinite(best_s)] = -1
        return best_s, best_r

    # ---------------------------------------------------------------- storage
    def write(self, path: Path, rows: np.ndarray) -> None:
        """Write the given rows, in order, as one ``.npy`` file (chunked, bounded memory)."""
        out = np.lib.format.open_memmap(path, mode="w+", dtype=self.dtype, shape=(rows.size, self.dim))
        for start in range(0, rows.size, _CHUNK_ROWS):
            part = rows[start : start + _CHUNK_ROWS]
            out[start : start + part.size] = self._data[part]
        out.flush()
        del out

    @classmethod
    def read(
        cls, path: Path, *, dim: int, dtype: FineDType | str, count: int, mmap: bool = True
    ) -> FineStore:
        store = cls(dim, dtype)
        try:
            data = np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise ValueError(f"{path}: unreadable fine vectors ({exc})") from exc
        if data.shape != (count, store.dim) or data.dtype != store.dtype:
            raise ValueError(
                f"{path}: expected {store.dtype} vectors of shape ({count}, {store.dim}), "
                f"found {data.dtype} {data.shape}"
            )
        store._data = data
        store._n = count
        return store
