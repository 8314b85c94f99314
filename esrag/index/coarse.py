"""Coarse stage: a FAISS factory-string index over coarse vectors, keyed by int64 ids.

The index is wrapped in ``IndexIDMap2`` so ids are stable (IVF indexes keep ids themselves
and are used as they are). Removal uses ``remove_ids`` when
the index supports it (Flat, IVF) and tombstones otherwise (HNSW): tombstoned ids stay in
the graph and are excluded from every search with an ``IDSelector``. Metadata filters are
applied *during* the search through ``SearchParameters(sel=IDSelectorBatch(...))``.

With faiss-gpu installed and a GPU present, unfiltered searches run on a GPU replica of the
index (re-cloned lazily after changes); filtered searches and all writes stay on the CPU.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

import faiss
import numpy as np

__all__ = ["CoarseIndex", "gpu_available"]

logger = logging.getLogger(__name__)

_SMALL_BATCH = 4

GPU_HINT = "faiss-gpu is not installed (or sees no GPU): pip install esrag[gpu]"


def gpu_available() -> bool:
    """Whether the installed faiss has GPU support and sees at least one GPU."""
    if not hasattr(faiss, "StandardGpuResources"):
        return False
    try:
        return int(faiss.get_num_gpus()) > 0
    except (AttributeError, RuntimeError):
        return False


def _native_ids(index: Any) -> bool:
    """IVF indexes store ids themselves (and do not renumber on removal, which the id map
    assumes): use them without an id map.
    """
    inner = faiss.downcast_index(index)
    if isinstance(inner, faiss.IndexIVF):
        return True
    if isinstance(inner, faiss.IndexPreTransform):
        return _native_ids(inner.index)
    return False


def _make(dim: int, index_type: str) -> Any:
    try:
        inner = faiss.index_factory(dim, index_type, faiss.METRIC_INNER_PRODUCT)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[-1] if str(exc).strip() else str(exc)
        raise ValueError(f"invalid coarse index type {index_type!r} for {dim} dims: {first}") from None
    return inner if _native_ids(inner) else faiss.IndexIDMap2(inner)


class CoarseIndex:
    """``IndexIDMap2`` over coarse vectors, with tombstones, filters and an optional GPU replica."""

    def __init__(
        self,
        dim: int,
        index_type: str,
        *,
        nprobe: int = 16,
        ef_search: int = 128,
        use_gpu: bool | None = None,
        index: Any | None = None,
        tombstones: np.ndarray | None = None,
    ) -> None:
        self.dim = int(dim)
        self.index_type = index_type
        self.nprobe = nprobe
        self.ef_search = ef_search
        self.index = index if index is not None else _make(self.dim, index_type)
        if self.index.d != self.dim:
            raise ValueError(f"coarse index has {self.index.d} dims, expected {self.dim}")
        self.tombstones: set[int] = set() if tombstones is None else {int(t) for t in tombstones}
        if use_gpu is True and not gpu_available():
            raise ImportError(GPU_HINT)
        self._want_gpu = gpu_available() if use_gpu is None else use_gpu
        self._gpu: Any | None = None
        self._gpu_lock = threading.Lock()
        self._wrapped = isinstance(self.index, faiss.IndexIDMap2)
        inner = faiss.downcast_index(self.index.index if self._wrapped else self.index)
        self._removable = not isinstance(inner, faiss.IndexHNSW)
        self._warned = False  # the tombstone warning was given for the current crossing

    # ------------------------------------------------------------------ state
    @property
    def is_trained(self) -> bool:
        """Whether the FAISS index is trained (always, for index types that need no training)."""
        return bool(self.index.is_trained)

    @property
    def ntotal(self) -> int:
        """Vectors held, tombstoned ones included."""
        return int(self.index.ntotal)

    def train(self, vectors: np.ndarray) -> None:
        """Train the index (no-op when it needs no training)."""
        if self.is_trained:
            return
        x = np.ascontiguousarray(vectors, dtype=np.float32)
        try:
            self.index.train(x)
        except RuntimeError as exc:
            lines = [line for line in str(exc).splitlines() if line.strip()]
            raise ValueError(
                f"training coarse index {self.index_type!r} on {x.shape[0]} vectors failed: "
                f"{lines[-1] if lines else exc}; use more documents or a smaller index "
                "(e.g. fewer IVF lists, or 'Flat')"
            ) from None
        self._invalidate()

    def add(self, vectors: np.ndarray, ids: np.ndarray) -> None:
        """Add ``vectors`` under int64 ``ids`` (the index must be trained)."""
        if not self.is_trained:
            raise RuntimeError("the coarse index must be trained before adding vectors")
        self.index.add_with_ids(
            np.ascontiguousarray(vectors, dtype=np.float32),
            np.ascontiguousarray(ids, dtype=np.int64),
        )
        self._invalidate()

    def remove(self, ids: np.ndarray) -> None:
        """Remove ids (which must be present): ``remove_ids`` or tombstones."""
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        if ids.size == 0:
            return
        if self._removable:
            try:
                self.index.remove_ids(faiss.IDSelectorBatch(ids))
                self._invalidate()
                return
            except RuntimeError:
                logger.debug("coarse index %s cannot remove ids; using tombstones", self.index_type)
                self._removable = False
        self.tombstones.update(int(i) for i in ids)
        many = len(self.tombstones) > max(1000, self.ntotal // 4)
        if many and not self._warned:  # once per crossing of the threshold, not per delete
            logger.warning(
                "%d of %d coarse vectors are tombstones; reconfigure() rebuilds the index",
                len(self.tombstones),
                self.ntotal,
            )
        self._warned = many

    def _invalidate(self) -> None:
        self._gpu = None

    # ----------------------------------------------------------------- search
    def _params(self, index: Any, sel: Any | None, k: int, refs: list[Any]) -> Any:
        """Search parameters for ``index`` (the index inside the id map) with selector ``sel``."""
        inner = faiss.downcast_index(index)
        kwargs: dict[str, Any] = {} if sel is None else {"sel": sel}
        if isinstance(inner, faiss.IndexIVF):
            return faiss.SearchParametersIVF(nprobe=self.nprobe, **kwargs)
        if isinstance(inner, faiss.IndexHNSW):
            return faiss.SearchParametersHNSW(efSearch=max(self.ef_search, k), **kwargs)
        if isinstance(inner, faiss.IndexPreTransform):
            # the id map only translates a selector on the outer parameters, which
            # IndexPreTransform does not forward: translate it ourselves for the inner index
            translated = sel
            if sel is not None and self._wrapped:
                translated = faiss.IDSelectorTranslated(self.index.id_map, sel)
                refs.append(translated)
            params = faiss.SearchParametersPreTransform()
            params.index_params = self._params(inner.index, translated, k, refs)
            refs.append(params.index_params)
            return params
        return faiss.SearchParameters(**kwargs) if kwargs else None

    def search(
        self, queries: np.ndarray, k: int, allowed: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` (scores, ids) per query; ids are -1 where fewer results exist.

        ``allowed``: int64 ids a result must belong to (pre-filtering), or ``None``.
        """
        x = np.ascontiguousarray(queries, dtype=np.float32)
        k = max(1, min(int(k), max(self.ntotal, 1)))
        refs: list[Any] = []
        sel: Any | None = None
        if allowed is not None:
            sel = faiss.IDSelectorBatch(np.ascontiguousarray(allowed, dtype=np.int64))
        elif self.tombstones:
            dead = np.fromiter(self.tombstones, dtype=np.int64, count=len(self.tombstones))
            keep = faiss.IDSelectorBatch(dead)
            refs.append(keep)
            sel = faiss.IDSelectorNot(keep)
        refs.append(sel)
        index = self.index if sel is not None else self._search_index()
        params = self._params(self.index.index if self._wrapped else self.index, sel, k, refs)
        if x.shape[0] > _SMALL_BATCH:
            return index.search(x, k, params=params)
        # a few queries: OpenMP fork/join costs more than it saves (10 ms vs 0.1 ms on a busy
        # 2-core box). The thread count is a per-thread OpenMP setting, so this is thread-safe.
        previous = faiss.omp_get_max_threads()
        faiss.omp_set_num_threads(1)
        try:
            return index.search(x, k, params=params)
        finally:
            faiss.omp_set_num_threads(previous)

    def _search_index(self) -> Any:
        if not self._want_gpu:
            return self.index
        with self._gpu_lock:
            if self._gpu is None:
                try:
                    res = faiss.StandardGpuResources()
                    self._gpu = faiss.index_cpu_to_gpu(res, 0, self.index)
                    self._gpu_res = res
                except (RuntimeError, AttributeError) as exc:
                    logger.warning("coarse index %s stays on the CPU: %s", self.index_type, exc)
                    self._want_gpu = False
                    return self.index
            return self._gpu

    # ---------------------------------------------------------------- storage
    def to_bytes(self) -> bytes:
        """The FAISS index serialised (``faiss.serialize_index``), e.g. to ship to a worker."""
        return bytes(faiss.serialize_index(self.index))

    def empty_copy(self) -> CoarseIndex:
        """A new coarse index with the same settings and training (quantizer, codebooks),
        holding no vectors: what every shard of a sharded index starts from.
        """
        if self.ntotal:
            raise ValueError(f"empty_copy needs an empty coarse index, this one holds {self.ntotal} vectors")
        return CoarseIndex.from_bytes(
            self.to_bytes(),
            dim=self.dim,
            index_type=self.index_type,
            nprobe=self.nprobe,
            ef_search=self.ef_search,
            use_gpu=self._want_gpu,
        )

    @classmethod
    def from_bytes(
        cls, data: bytes, *, dim: int, index_type: str, nprobe: int, ef_search: int, use_gpu: bool | None
    ) -> CoarseIndex:
        """Inverse of :meth:`to_bytes`."""
        index = faiss.deserialize_index(np.frombuffer(data, dtype=np.uint8))
        return cls(dim, index_type, nprobe=nprobe, ef_search=ef_search, use_gpu=use_gpu, index=index)

    def write(self, path: Path) -> None:
        """Write the FAISS index to ``path``."""
        faiss.write_index(self.index, str(path))

    @classmethod
    def read(
        cls,
        path: Path,
        *,
        dim: int,
        index_type: str,
        nprobe: int,
        ef_search: int,
        use_gpu: bool | None,
        tombstones: np.ndarray | None,
    ) -> CoarseIndex:
        """Read a FAISS index written by :meth:`write`; errors name ``path``.

        ``use_gpu=True`` without a usable GPU is a warning and a CPU search (an index saved
        on a GPU machine stays loadable anywhere); building one still requires the GPU.
        """
        try:
            index = faiss.read_index(str(path))
        except RuntimeError as exc:
            lines = [line for line in str(exc).splitlines() if line.strip()]
            raise ValueError(f"{path}: unreadable FAISS index ({lines[-1] if lines else exc})") from None
        # read_index returns the concrete type
        if not (isinstance(index, faiss.IndexIDMap2) or _native_ids(index)):
            raise ValueError(f"{path}: expected an IndexIDMap2 or an IVF index, found {type(index).__name__}")
        if index.d != dim:
            raise ValueError(f"{path}: the coarse index has {index.d} dims, the manifest says {dim}")
        if use_gpu is True and not gpu_available():
            logger.warning("%s was saved with use_gpu=True; %s: searching on the CPU", path, GPU_HINT)
            use_gpu = None
        return cls(
            dim,
            index_type,
            nprobe=nprobe,
            ef_search=ef_search,
            use_gpu=use_gpu,
            index=index,
            tombstones=tombstones,
        )
