"""CascadeIndex: coarse shortlist from shallow, low-dimension vectors; exact deep rerank.

A document is stored as (a) its coarse vector — the coarse source view (layer Lc, full
width) through a fitted :class:`~esrag.index.transforms.FittedTransform` — inside a FAISS
index, (b) its fine vector (Ld, dd) in a contiguous array, and (c) its text and metadata.
A search encodes each query once (both views, from one encoder pass), takes a ``shortlist``
from the coarse index (pre-filtered by metadata through an ``IDSelector``), gathers those
fine vectors and ranks them exactly. With ``mode="coarse"`` the pass stops at the coarse
layer; with a shallow ``CascadeConfig.query_layer`` it stops there in every mode and the
query map brings the shallow vector to the deep documents (:mod:`.query`, :mod:`.query_pass`).

A thin facade: the lock, the embedder adapter and the current
:class:`~esrag.index.state.IndexState` (``None`` until the first documents fit the coarse
stage); searching (:mod:`.search`), rebuilding (:mod:`.rebuild`) and persistence
(:mod:`.format`) are functions of that state. Searches take a read lock, writes a write
lock, so a search never sees a half-applied batch. The model pass of an add runs outside the
lock; whether a batch is inserted or kept to fit the coarse stage is decided under it.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from esrag.index import query_pass
from esrag.index import state as st
from esrag.index._lock import RWLock
from esrag.index.batch import (
    DocBatch,
    RawPart,
    check_ids,
    check_metadatas,
    checked_batches,
    encoded_parts,
    vector_parts,
)
from esrag.index.config import CascadeConfig, QueryMapKind, SearchMode, Transform
from esrag.index.docstore import validate_filter
from esrag.index.embedder import EmbedderAdapter
from esrag.index.format import Manifest, load_state, save_state
from esrag.index.identity import ModelCheck, identity_fields
from esrag.index.query import QueryMap
from esrag.index.rebuild import initial_state, reconfigured
from esrag.index.results import IndexedDocument, SearchResult
from esrag.index.search import check_queries, check_search_args, search_state
from esrag.index.transforms import FittedTransform
from esrag.validation import (
    check_batch_size,
    check_dim,
    check_strings,
    check_texts,
    check_vectors,
    default_shortlist,
)

__all__ = ["CascadeIndex", "IndexedDocument", "SearchResult"]


class CascadeIndex:
    """Two-stage (coarse FAISS shortlist → exact fine rerank) index with documents."""

    def __init__(self, embedder: Any | None = None, config: CascadeConfig | None = None) -> None:
        if config is None:
            config = CascadeConfig()
        if not isinstance(config, CascadeConfig):
            raise TypeError(f"config must be a CascadeConfig, got {type(config).__name__}")
        self._config = config
        self._adapter = EmbedderAdapter(embedder, config) if embedder is not None else None
        self._lock = RWLock()
        self._state: st.IndexState | None = None
        self.manifest: Manifest | None = None
        """The manifest of the last save or load (``None`` before either)."""

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
        query_source: np.ndarray | None = None,
    ) -> CascadeIndex:
        """Build from precomputed (n, source_dim) coarse source and (n, dd) fine vectors
        (``query_source``: see :meth:`add_embeddings`).
        """
        if len(coarse_source) == 0:
            raise ValueError("cannot build an index from an empty corpus (0 vectors)")
        index = cls(embedder, config)
        index.add_embeddings(
            coarse_source, fine, ids=ids, texts=texts, metadatas=metadatas, query_source=query_source
        )
        return index

    # ------------------------------------------------------------- properties
    @property
    def config(self) -> CascadeConfig:
        """The index's settings."""
        return self._state.config if self._state is not None else self._config

    @property
    def embedder(self) -> Any | None:
        """The embedder given at construction or load (``None`` for a vectors-only index)."""
        return self._adapter.original if self._adapter else None

    @property
    def query_map(self) -> QueryMap | None:
        """How shallow queries reach the documents' spaces (``None``: full depth, or not fitted yet)."""
        return self._state.query_map if self._state is not None else None

    @property
    def transform(self) -> FittedTransform | None:
        """The fitted coarse transform (``None`` until the first documents arrive)."""
        return self._state.transform if self._state is not None else None

    @property
    def source_dim(self) -> int | None:
        """Width of the coarse source vectors (``None`` while unknown)."""
        if self._state is not None:
            return self._state.source_dim
        return self._adapter.source_dim if self._adapter else None

    @property
    def fine_dim(self) -> int | None:
        """Width of the fine vectors (``None`` while unknown)."""
        if self._state is not None:
            return self._state.fine_dim
        return self._adapter.fine_dim if self._adapter else None

    @property
    def coarse_dim(self) -> int | None:
        """Width of the coarse vectors after the transform (``None`` until fitted)."""
        return self._state.transform.dim if self._state is not None else None

    @property
    def same_vectors(self) -> bool:
        """Whether one query vector feeds both stages (plain Embeddings, or coarse view = fine view)."""
        if self._adapter is not None:
            return self._adapter.same_vectors
        return self.source_dim is not None and self.source_dim == self.fine_dim

    def __len__(self) -> int:
        return len(self._state) if self._state is not None else 0

    def __contains__(self, doc_id: object) -> bool:
        return self._state is not None and doc_id in self._state.rows

    def ids(self) -> list[str]:
        """Live document ids in row order (the order :meth:`reconfigure` expects)."""
        with self._lock.read():
            return st.live_ids(self._state) if self._state is not None else []

    def stats(self) -> dict[str, Any]:
        """Counts and settings: documents, rows, tombstones, index type, transform, dims."""
        with self._lock.read():
            if self._state is not None:
                return st.state_stats(self._state)
            return st.empty_stats(self.config, self.source_dim, self.fine_dim)

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
        # documents also at the query layer while a query map is to be fitted (a hint read without
        # the lock: _insert_pending encodes what a concurrent clear() left missing)
        encode = query_pass.document_encoder(self._require_adapter(), self.config, self._unfitted, batch_size)
        self._ingest(encoded_parts(encode, doc_ids, texts, metas, batch_size, show_progress_bar))
        return doc_ids

    def add_embeddings(
        self,
        coarse_source: np.ndarray,
        fine: np.ndarray,
        *,
        ids: Sequence[str | None] | None = None,
        texts: Sequence[str] | None = None,
        metadatas: Sequence[dict[str, Any] | None] | None = None,
        query_source: np.ndarray | None = None,
    ) -> list[str]:
        """Upsert documents from precomputed vectors (L2-normalised here).

        ``query_source``: the documents' (query layer, full width) vectors, which fit the ridge
        query map of a shallow-query index (``CascadeConfig.query_layer``); used only while the
        index is being fitted.
        """
        source = check_vectors("coarse_source", coarse_source, self.source_dim)
        n = source.shape[0]
        fine_arr = check_vectors("fine", fine, self.fine_dim, n)
        texts_list = check_texts(texts) if texts is not None else [""] * n
        if len(texts_list) != n:
            raise ValueError(f"got {len(texts_list)} texts for {n} vectors")
        doc_ids = check_ids(ids, n)
        metas = check_metadatas(metadatas, n)
        self._ingest(vector_parts(doc_ids, texts_list, metas, source, fine_arr, query_source))
        return doc_ids

    def _unfitted(self) -> bool:
        return self._state is None

    def _ingest(self, parts: Iterable[RawPart]) -> None:
        """Insert batches as they come (the model pass runs outside the lock).

        Until the coarse stage exists, batches are kept until ``train_size`` documents (or
        the last batch) have arrived, then the stage is fitted on them. Whether the stage
        exists is decided under the write lock, so a concurrent ``clear()`` (or another
        thread fitting first) cannot slip in between the decision and the insert.
        """
        pending: list[DocBatch] = []
        for batch in checked_batches(parts):
            pending.append(batch)
            with self._lock.write():
                if self._state is None and sum(map(len, pending)) < self.config.train_size:
                    continue  # keep collecting the documents that fit the coarse stage
                self._insert_pending(pending)
            pending = []
        if pending:
            with self._lock.write():
                self._insert_pending(pending)

    def _insert_pending(self, pending: list[DocBatch]) -> None:
        """Fit the coarse stage on ``pending`` if there is none yet, then insert it (write lock held)."""
        if self._state is None:
            check_dim("coarse_source", pending[0].source, self.source_dim)
            check_dim("fine", pending[0].fine, self.fine_dim)
            state = initial_state(self._config, self._adapter, pending)
            if self._adapter is not None:
                self._adapter.learn_dims(state.source_dim, state.fine_dim)
            self._state = state
        for batch in pending:
            st.insert(self._state, batch)

    # ---------------------------------------------------------------- removal
    def delete(self, ids: Iterable[str]) -> int:
        """Delete documents by id (missing ids are ignored); returns how many were removed."""
        wanted = check_strings(ids, "ids")
        with self._lock.write():
            return st.remove(self._state, wanted) if self._state is not None else 0

    def clear(self) -> None:
        """Remove every document and forget the fitted transform and coarse index."""
        with self._lock.write():
            self._config = self.config
            self._state = None

    def get_by_ids(self, ids: Sequence[str]) -> list[IndexedDocument]:
        """Documents for the given ids, in that order; unknown ids are skipped."""
        with self._lock.read():
            return st.documents(self._state, ids) if self._state is not None else []

    def fine_vectors(self, ids: Sequence[str]) -> tuple[list[str], np.ndarray]:
        """(found ids, their fine vectors as float32 (n, fine_dim)); unknown ids are skipped."""
        with self._lock.read():
            if self._state is None:
                return [], np.zeros((0, self.fine_dim or 0), dtype=np.float32)
            return st.fine_vectors_of(self._state, ids)

    # ----------------------------------------------------------------- search
    def encode_queries(
        self, queries: Sequence[str], *, full_depth: bool = False
    ) -> tuple[np.ndarray, np.ndarray]:
        """(coarse source, fine) query vectors from one pass (``full_depth``: the documents' view)."""
        return self._encode(queries, SearchMode.CASCADE, full_depth)  # type: ignore[return-value]

    def encode_query_sources(self, queries: Sequence[str]) -> np.ndarray:
        """Coarse source query vectors only (the pass stops at the coarse or the query layer)."""
        return self._encode(queries, SearchMode.COARSE, False)[0]

    def _encode(self, queries: Sequence[str], mode: SearchMode, full: bool) -> tuple[np.ndarray, Any]:
        texts, adapter, state = check_texts(queries), self._require_adapter(), self._state
        config, qmap = (state.config, state.query_map) if state is not None else (self._config, None)
        return query_pass.encode_queries(adapter, config, qmap, texts, mode, full_depth=full)

    def query_depth(
        self, mode: SearchMode | str = SearchMode.CASCADE, *, full_depth: bool = False
    ) -> int | None:
        """The deepest layer a query's encoder pass runs in ``mode`` (``None`` for plain embeddings)."""
        return query_pass.pass_depth(
            self._adapter, self.config, self.query_map, SearchMode(mode), full_depth=full_depth
        )

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
        layer); the other modes encode both views in one pass, which for a shallow-query index
        (``CascadeConfig.query_layer``) stops at the query layer in every mode.
        """
        queries = [queries] if isinstance(queries, str) else check_texts(queries)
        _, _, mode = check_search_args(k, default_shortlist(shortlist, k, self.config.shortlist), mode)
        if filter is not None:
            validate_filter(filter)
        if not queries:
            return SearchResult([], [])
        if self._state is None and self._adapter is not None:  # nothing to find (and no query map yet)
            return SearchResult([[] for _ in queries], [[] for _ in queries])
        source, fine = self._encode(queries, mode, False)
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
            k, default_shortlist(shortlist, k, self.config.shortlist), mode
        )
        if filter is not None:
            validate_filter(filter)
        source, fine_q = check_queries(coarse_source, fine, mode, self.source_dim, self.fine_dim)
        with self._lock.read():
            if self._state is None:
                return SearchResult([[] for _ in range(source.shape[0])], [[] for _ in source])
            return search_state(
                self._state, source, fine_q, k=k, shortlist=shortlist, filter=filter, mode=mode
            )

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
        query_layer: int | None = None,
        query_map: QueryMapKind | str | None = None,
        coarse_source: np.ndarray | None = None,
        query_source: np.ndarray | None = None,
        batch_size: int = 64,
        show_progress_bar: bool | None = None,
    ) -> None:
        """Rebuild the coarse stage with new settings (the fine stage is kept); searches wait.

        Source vectors come from ``coarse_source`` (rows in :meth:`ids` order), else from the
        stored fine vectors when they are the same view, else by re-encoding the stored texts.
        Only ``shortlist``/``nprobe``/``ef_search`` rebuild nothing; only ``query_layer``/
        ``query_map`` refit the query map alone (from ``query_source``, the documents'
        query-layer vectors in :meth:`ids` order, else re-encoding the fitting documents).
        """
        given = {"coarse_layer": coarse_layer, "coarse_dim": coarse_dim, "transform": transform}
        given.update(index_type=index_type, shortlist=shortlist, nprobe=nprobe, ef_search=ef_search)
        given.update(query_layer=query_layer, query_map=query_map)
        changes = {name: value for name, value in given.items() if value is not None}
        new_cfg = self.config.replace(**changes)
        with self._lock.write():
            adapter = EmbedderAdapter(self._adapter.original, new_cfg) if self._adapter else None
            if self._state is not None:
                sources = (coarse_source, query_source)
                self._state = reconfigured(
                    self._state, new_cfg, set(changes), adapter, sources, batch_size, show_progress_bar
                )
            self._config, self._adapter = new_cfg, adapter

    # ------------------------------------------------------------ persistence
    def save(self, folder: str | os.PathLike[str]) -> Path:
        """Atomically write the index into ``folder`` (replacing any previous index there)."""
        with self._lock.read():
            if self._state is None:
                raise ValueError("cannot save an index that has never held documents (nothing is fitted)")
            self.manifest = save_state(self._state, folder, identity_fields(self._adapter))
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
        check = ModelCheck(Path(folder), embedder)
        state, manifest = load_state(folder, verify=verify, mmap=mmap, check=check)
        query_pass.check_loaded_map(check.adapter, state.config, state.query_map, str(folder))
        index = cls(None, state.config)
        index._adapter = check.adapter
        index._state = state
        index.manifest = manifest
        return index
