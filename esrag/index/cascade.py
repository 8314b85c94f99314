"""CascadeIndex: coarse shortlist from shallow, low-dimension vectors; exact deep rerank.

A document is stored as (a) its coarse vector — the coarse source view (layer Lc, full
width) through a fitted :class:`~esrag.index.transforms.FittedTransform` — inside a FAISS
index, (b) its fine vector (Ld, dd) in a contiguous array, and (c) its text and metadata.
A search encodes each query once (both views, from one encoder pass), takes a ``shortlist``
from the coarse index (pre-filtered by metadata through an ``IDSelector``), gathers those
fine vectors and ranks them exactly. With ``mode="coarse"`` only the coarse source view is
encoded, so an elastic encoder's pass stops at the coarse layer.

Thread safety: searches take a read lock, writes (add/delete/clear/reconfigure) a write
lock, so a search never sees a half-applied batch; each add batch becomes visible
atomically. The model pass of an add runs outside the lock; whether a batch is inserted or
kept to fit the coarse stage is decided under it, so a concurrent ``clear()`` is safe.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from esrag._progress import progress
from esrag.index._inputs import (
    check_batch_size,
    check_dim,
    check_ids,
    check_metadatas,
    check_search_args,
    check_strings,
    check_texts,
    check_vectors,
)
from esrag.index._lock import RWLock
from esrag.index.coarse import CoarseIndex
from esrag.index.config import CascadeConfig, SearchMode, Transform
from esrag.index.docstore import DocStore, validate_filter
from esrag.index.embedder import EmbedderAdapter
from esrag.index.fine import FineStore
from esrag.index.persist import load_index, save_index
from esrag.index.rebuild import reconfigure_index
from esrag.index.stages import fit_coarse, search_rows
from esrag.index.storage import Manifest
from esrag.index.transforms import FittedTransform, l2_normalize

__all__ = ["CascadeIndex", "IndexedDocument", "SearchResult"]

logger = logging.getLogger(__name__)

_QUERY_CHUNK = 256

_Batch = tuple[list[str], list[str], list[dict[str, Any]], np.ndarray, np.ndarray]


@dataclass(frozen=True)
class SearchResult:
    """Per query, best first: document ids and their scores (cosine similarity)."""

    ids: list[list[str]]
    scores: list[list[float]]

    def __len__(self) -> int:
        return len(self.ids)


@dataclass(frozen=True)
class IndexedDocument:
    id: str
    text: str
    metadata: dict[str, Any]


def _grow(array: np.ndarray, size: int, fill: Any) -> np.ndarray:
    if size <= array.size:
        return array
    out = np.full(max(size, int(array.size * 1.5) + 1024), fill, dtype=array.dtype)
    out[: array.size] = array
    return out


class CascadeIndex:
    """Two-stage (coarse FAISS shortlist → exact fine rerank) index with documents."""

    def __init__(self, embedder: Any | None = None, config: CascadeConfig | None = None) -> None:
        if config is None:
            config = CascadeConfig()
        if not isinstance(config, CascadeConfig):
            raise TypeError(f"config must be a CascadeConfig, got {type(config).__name__}")
        self.config = config
        self._adapter = EmbedderAdapter(embedder, config) if embedder is not None else None
        self._lock = RWLock()
        self._docs = DocStore()
        self._fine: FineStore | None = None
        self._coarse: CoarseIndex | None = None
        self._transform: FittedTransform | None = None
        self._alive = np.zeros(0, dtype=bool)
        self._id_of_row = np.zeros(0, dtype=np.int64)
        self._row_of_id = np.zeros(0, dtype=np.int64)
        self._next_id = 0
        self._source_dim = self._adapter.source_dim if self._adapter else None
        self._fine_dim = self._adapter.fine_dim if self._adapter else None
        self.manifest: Manifest | None = None

    # ------------------------------------------------------------ construction
    @classmethod
    def build(
        cls,
        embedder: Any,
        texts: Sequence[str],
        ids: Sequence[str] | None = None,
        metadatas: Sequence[dict[str, Any]] | None = None,
        config: CascadeConfig | None = None,
        *,
        batch_size: int = 64,
        show_progress_bar: bool | None = None,
    ) -> CascadeIndex:
        """Encode a corpus in batches, fit the transform, train the coarse index, add all."""
        texts = check_texts(texts)
        if not texts:
            raise ValueError("cannot build an index from an empty corpus (0 texts)")
        index = cls(embedder, config)
        index.add(texts, ids, metadatas, batch_size=batch_size, show_progress_bar=show_progress_bar)
        return index

    @classmethod
    def build_from_embeddings(
        cls,
        coarse_source: np.ndarray,
        fine: np.ndarray,
        *,
        ids: Sequence[str] | None = None,
        texts: Sequence[str] | None = None,
        metadatas: Sequence[dict[str, Any]] | None = None,
        config: CascadeConfig | None = None,
        embedder: Any | None = None,
    ) -> CascadeIndex:
        """Build from precomputed (n, source_dim) coarse source and (n, dd) fine vectors."""
        if len(coarse_source) == 0:
            raise ValueError("cannot build an index from an empty corpus (0 vectors)")
        index = cls(embedder, config)
        index.add_embeddings(coarse_source, fine, ids=ids, texts=texts, metadatas=metadatas)
        return index

    # ------------------------------------------------------------- properties
    @property
    def embedder(self) -> Any | None:
        return self._adapter.original if self._adapter else None

    @property
    def transform(self) -> FittedTransform | None:
        """The fitted coarse transform (``None`` until the first documents arrive)."""
        return self._transform

    @property
    def source_dim(self) -> int | None:
        return self._source_dim

    @property
    def fine_dim(self) -> int | None:
        return self._fine_dim

    @property
    def coarse_dim(self) -> int | None:
        return self._transform.dim if self._transform else None

    @property
    def same_vectors(self) -> bool:
        """Whether one query vector feeds both stages (plain Embeddings, or coarse view = fine view)."""
        if self._adapter is not None:
            return self._adapter.same_vectors
        return self._source_dim is not None and self._source_dim == self._fine_dim

    def __len__(self) -> int:
        return len(self._docs)

    def __contains__(self, doc_id: object) -> bool:
        return doc_id in self._docs.row_of

    def ids(self) -> list[str]:
        """Live document ids in row order (the order :meth:`reconfigure` expects)."""
        with self._lock.read():
            return [self._docs.ids[r] for r in np.flatnonzero(self._alive).tolist()]  # type: ignore[misc]

    def stats(self) -> dict[str, Any]:
        with self._lock.read():
            return {
                "documents": len(self._docs),
                "rows": len(self._fine) if self._fine else 0,
                "tombstones": len(self._coarse.tombstones) if self._coarse else 0,
                "index_type": self.config.index_type,
                "transform": self._transform.kind.value if self._transform else None,
                "source_dim": self._source_dim,
                "coarse_dim": self.coarse_dim,
                "fine_dim": self._fine_dim,
                "fine_dtype": self.config.fine_dtype.value,
                "fine_memory_mapped": bool(self._fine and self._fine.memory_mapped),
            }

    # -------------------------------------------------------------- ingestion
    def _require_adapter(self) -> EmbedderAdapter:
        if self._adapter is None:
            raise RuntimeError(
                "this index has no embedder (built or loaded from vectors); pass embedder=... "
                "to CascadeIndex/load(), or use add_embeddings()/search_embeddings()"
            )
        return self._adapter

    def add(
        self,
        texts: Sequence[str],
        ids: Sequence[str | None] | None = None,
        metadatas: Sequence[dict[str, Any] | None] | None = None,
        *,
        batch_size: int = 64,
        show_progress_bar: bool | None = None,
    ) -> list[str]:
        """Encode and upsert documents in batches; returns their ids (generated if missing)."""
        texts = check_texts(texts)
        doc_ids = check_ids(ids, len(texts))
        metas = check_metadatas(metadatas, len(texts))
        check_batch_size(batch_size)
        if not texts:
            return []
        adapter = self._require_adapter()

        def batches() -> Iterator[_Batch]:
            bar = progress(total=len(texts), desc="Indexing", show=show_progress_bar, unit="doc")
            try:
                for start in range(0, len(texts), batch_size):
                    chunk = texts[start : start + batch_size]
                    source, fine = adapter.encode_documents(chunk, batch_size=batch_size)
                    bar.update(len(chunk))
                    stop = start + len(chunk)
                    yield doc_ids[start:stop], chunk, metas[start:stop], source, fine
            finally:
                bar.close()

        self._ingest(batches())
        return doc_ids

    def add_embeddings(
        self,
        coarse_source: np.ndarray,
        fine: np.ndarray,
        *,
        ids: Sequence[str | None] | None = None,
        texts: Sequence[str] | None = None,
        metadatas: Sequence[dict[str, Any] | None] | None = None,
    ) -> list[str]:
        """Upsert documents from precomputed vectors (L2-normalised here)."""
        source = check_vectors("coarse_source", coarse_source, self._source_dim)
        n = source.shape[0]
        fine_arr = check_vectors("fine", fine, self._fine_dim, n)
        texts_list = check_texts(texts) if texts is not None else [""] * n
        if len(texts_list) != n:
            raise ValueError(f"got {len(texts_list)} texts for {n} vectors")
        doc_ids = check_ids(ids, n)
        metas = check_metadatas(metadatas, n)
        step = 65_536
        self._ingest(
            (
                doc_ids[s : s + step],
                texts_list[s : s + step],
                metas[s : s + step],
                source[s : s + step],
                fine_arr[s : s + step],
            )
            for s in range(0, n, step)
        )
        return doc_ids

    def _ingest(self, batches: Iterable[_Batch]) -> None:
        """Insert batches as they come (the model pass runs outside the lock).

        Until the coarse stage exists, batches are kept until ``train_size`` documents (or
        the last batch) have arrived, then the stage is fitted on them. Whether the stage
        exists is decided under the write lock, so a concurrent ``clear()`` (or another
        thread fitting first) cannot slip in between the decision and the insert.
        """
        pending: list[_Batch] = []
        pending_n = 0
        for batch in batches:
            doc_ids, texts, metas, source, fine = batch
            n = len(doc_ids)
            first = pending[0] if pending else None  # batches fitting together must agree
            source = check_vectors("coarse_source", source, first[3].shape[1] if first else None, n)
            fine = check_vectors("fine", fine, first[4].shape[1] if first else None, n)
            source, fine = l2_normalize(source), l2_normalize(fine)
            pending.append((doc_ids, texts, metas, source, fine))
            pending_n += n
            with self._lock.write():
                if self._coarse is None and pending_n < self.config.train_size:
                    continue  # keep collecting the documents that fit the coarse stage
                self._insert_pending(pending)
            pending, pending_n = [], 0
        if pending:
            with self._lock.write():
                self._insert_pending(pending)

    def _insert_pending(self, pending: list[_Batch]) -> None:
        """Fit the coarse stage on ``pending`` if there is none yet, then insert it (write lock held)."""
        if self._coarse is None:
            self._fit(np.concatenate([b[3] for b in pending]), np.concatenate([b[4] for b in pending]))
        for batch in pending:
            self._insert(*batch)

    def _fit(self, source: np.ndarray, fine: np.ndarray) -> None:
        cfg = self.config
        source = check_vectors("coarse_source", source, self._source_dim)
        fine = check_vectors("fine", fine, self._fine_dim, source.shape[0])
        source_dim, fine_dim = source.shape[1], fine.shape[1]
        transform, coarse = fit_coarse(
            cfg, source, fine, same_vectors=bool(self._adapter and self._adapter.same_vectors)
        )
        self._source_dim, self._fine_dim = source_dim, fine_dim
        if self._adapter is not None and self._adapter.source_dim is None:
            self._adapter.source_dim, self._adapter.fine_dim = source_dim, fine_dim
        self._transform, self._coarse = transform, coarse
        self._fine = FineStore(fine_dim, cfg.fine_dtype)

    def _insert(
        self,
        ids: list[str],
        texts: list[str],
        metas: list[dict[str, Any]],
        source: np.ndarray,
        fine: np.ndarray,
    ) -> None:
        """Upsert one batch of L2-normalised rows; the caller holds the write lock."""
        assert self._coarse is not None and self._fine is not None and self._transform
        check_dim("coarse_source", source, self._source_dim)
        check_dim("fine", fine, self._fine_dim)
        coarse_vectors = self._transform(source)
        self._remove([i for i in ids if i in self._docs.row_of])
        n = len(ids)
        new_ids = np.arange(self._next_id, self._next_id + n, dtype=np.int64)
        self._coarse.add(coarse_vectors, new_ids)
        rows = self._fine.append(fine)
        for doc_id, text, meta in zip(ids, texts, metas, strict=True):
            self._docs.append(doc_id, text, meta)
        end = int(rows[-1]) + 1
        self._alive = _grow(self._alive, end, False)
        self._id_of_row = _grow(self._id_of_row, end, -1)
        self._row_of_id = _grow(self._row_of_id, self._next_id + n, -1)
        self._alive[rows] = True
        self._id_of_row[rows] = new_ids
        self._row_of_id[new_ids] = rows
        self._next_id += n

    # ---------------------------------------------------------------- removal
    def _remove(self, ids: list[str]) -> int:
        if not ids:
            return 0
        rows = np.array([self._docs.remove(i) for i in ids], dtype=np.int64)
        internal = self._id_of_row[rows]
        assert self._coarse is not None
        self._coarse.remove(internal)
        self._alive[rows] = False
        self._row_of_id[internal] = -1
        return rows.size

    def delete(self, ids: Iterable[str]) -> int:
        """Delete documents by id (missing ids are ignored); returns how many were removed."""
        wanted = list(dict.fromkeys(check_strings(ids, "ids")))
        with self._lock.write():
            return self._remove([i for i in wanted if i in self._docs.row_of])

    def clear(self) -> None:
        """Remove every document and forget the fitted transform and coarse index."""
        with self._lock.write():
            fresh = CascadeIndex(None, self.config)
            fresh._adapter = self._adapter
            fresh._source_dim = self._adapter.source_dim if self._adapter else None
            fresh._fine_dim = self._adapter.fine_dim if self._adapter else None
            for name in (
                "_docs",
                "_fine",
                "_coarse",
                "_transform",
                "_alive",
                "_id_of_row",
                "_row_of_id",
                "_next_id",
                "_source_dim",
                "_fine_dim",
            ):
                setattr(self, name, getattr(fresh, name))

    def get_by_ids(self, ids: Sequence[str]) -> list[IndexedDocument]:
        """Documents for the given ids, in that order; unknown ids are skipped."""
        with self._lock.read():
            out = []
            for doc_id in ids:
                row = self._docs.row_of.get(doc_id)
                if row is not None:
                    out.append(IndexedDocument(doc_id, self._docs.texts[row], self._docs.metadata(row)))
            return out

    def fine_vectors(self, ids: Sequence[str]) -> tuple[list[str], np.ndarray]:
        """(found ids, their fine vectors as float32 (n, fine_dim)); unknown ids are skipped."""
        with self._lock.read():
            rows = [(i, self._docs.row_of[i]) for i in ids if i in self._docs.row_of]
            if not rows or self._fine is None:
                return [], np.zeros((0, self._fine_dim or 0), dtype=np.float32)
            return [i for i, _ in rows], self._fine.gather(np.array([r for _, r in rows]))

    # ----------------------------------------------------------------- search
    def encode_queries(self, queries: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """(coarse source, fine) query vectors from one encoder pass."""
        return self._require_adapter().encode_queries(check_texts(queries))

    def encode_query_sources(self, queries: Sequence[str]) -> np.ndarray:
        """Coarse source query vectors only (the encoder pass stops at the coarse layer)."""
        return self._require_adapter().encode_query_sources(check_texts(queries))

    def _default_shortlist(self, k: object) -> int:
        """The configured shortlist, grown to ``k`` when ``k`` is larger."""
        if isinstance(k, int) and not isinstance(k, bool):
            return max(self.config.shortlist, k)
        return self.config.shortlist

    def search(
        self,
        queries: str | Sequence[str],
        k: int = 10,
        shortlist: int | None = None,
        filter: Mapping[str, Any] | None = None,
        mode: SearchMode | str = SearchMode.CASCADE,
    ) -> SearchResult:
        """Search with text queries (a str counts as one query).

        ``mode="coarse"`` encodes only the coarse source view (the pass stops at the coarse
        layer); the other modes encode both views in one pass.
        """
        queries = [queries] if isinstance(queries, str) else check_texts(queries)
        _, _, mode = check_search_args(
            k, self._default_shortlist(k) if shortlist is None else shortlist, mode
        )
        if filter is not None:
            validate_filter(filter)
        if not queries:
            return SearchResult([], [])
        if mode is SearchMode.COARSE:
            source = self.encode_query_sources(queries)
            return self.search_embeddings(source, None, k, shortlist, filter, mode)
        source, fine = self.encode_queries(queries)
        return self.search_embeddings(source, fine, k, shortlist, filter, mode)

    def search_embeddings(
        self,
        coarse_source: np.ndarray,
        fine: np.ndarray | None,
        k: int = 10,
        shortlist: int | None = None,
        filter: Mapping[str, Any] | None = None,
        mode: SearchMode | str = SearchMode.CASCADE,
    ) -> SearchResult:
        """Search with precomputed (Q, source_dim) and (Q, fine_dim) query vectors.

        ``fine`` may be ``None`` with ``mode="coarse"`` (the fine stage is not used).
        """
        k, shortlist, mode = check_search_args(
            k, self._default_shortlist(k) if shortlist is None else shortlist, mode
        )
        if filter is not None:
            validate_filter(filter)
        if fine is None and mode is not SearchMode.COARSE:
            raise ValueError(
                f"fine query vectors are required with mode={mode.value!r} (only 'coarse' skips them)"
            )
        source = l2_normalize(check_vectors("query coarse_source", coarse_source, self._source_dim))
        fine_q = (
            None
            if fine is None
            else l2_normalize(check_vectors("query fine", fine, self._fine_dim, source.shape[0]))
        )
        with self._lock.read():
            if len(self._docs) == 0 or self._coarse is None:
                return SearchResult([[] for _ in range(source.shape[0])], [[] for _ in source])
            candidates = None if filter is None else self._docs.matching_rows(filter)
            ids: list[list[str]] = []
            out_scores: list[list[float]] = []
            for start in range(0, source.shape[0], _QUERY_CHUNK):  # bounded memory per chunk
                part = slice(start, start + _QUERY_CHUNK)
                fine_part = None if fine_q is None else fine_q[part]
                scores, rows = search_rows(self, source[part], fine_part, k, shortlist, candidates, mode)
                for rr, ss in zip(rows.tolist(), scores.tolist(), strict=True):
                    keep = [(r, s) for r, s in zip(rr, ss, strict=True) if r >= 0 and s > -np.inf]
                    ids.append([self._docs.ids[r] for r, _ in keep])  # type: ignore[misc]
                    out_scores.append([s for _, s in keep])
        return SearchResult(ids, out_scores)

    # ------------------------------------------------------------- reconfigure
    def reconfigure(
        self,
        *,
        coarse_layer: int | None = None,
        coarse_dim: int | None = None,
        transform: Transform | str | None = None,
        index_type: str | None = None,
        shortlist: int | None = None,
        nprobe: int | None = None,
        ef_search: int | None = None,
        coarse_source: np.ndarray | None = None,
        batch_size: int = 64,
        show_progress_bar: bool | None = None,
    ) -> None:
        """Rebuild the coarse stage with new settings (the fine stage is kept).

        Source vectors come from ``coarse_source`` (rows in :meth:`ids` order), else from the
        stored fine vectors when they are the same view, else by re-encoding the stored texts.
        Changing only ``shortlist``/``nprobe``/``ef_search`` rebuilds nothing. Searches wait
        while the coarse stage is rebuilt.
        """
        reconfigure_index(
            self,
            coarse_layer=coarse_layer,
            coarse_dim=coarse_dim,
            transform=transform,
            index_type=index_type,
            shortlist=shortlist,
            nprobe=nprobe,
            ef_search=ef_search,
            coarse_source=coarse_source,
            batch_size=batch_size,
            show_progress_bar=show_progress_bar,
        )

    # ------------------------------------------------------------ persistence
    def save(self, folder: str | os.PathLike[str]) -> Path:
        """Atomically write the index into ``folder`` (replacing any previous index there)."""
        with self._lock.read():
            self.manifest = save_index(self, Path(folder))
        return Path(folder)

    @classmethod
    def load(
        cls,
        folder: str | os.PathLike[str],
        embedder: Any | None = None,
        *,
        verify: bool = True,
        mmap: bool = True,
    ) -> CascadeIndex:
        """Load an index folder; refuses corrupted files and a different model."""
        return load_index(cls, Path(folder), embedder, verify=verify, mmap=mmap)
