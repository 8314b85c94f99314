"""What :class:`~esrag.index.cascade.CascadeIndex` and
:class:`~esrag.index.sharded.ShardedIndex` share: the embedder adapter and the lock, the
properties read from the fitted state, checked ingestion (batches kept until the coarse stage
can be fitted), and text search through the query's encoder pass.

A subclass owns its state (one :class:`~esrag.index.state.IndexState`, or one per shard) and
provides three hooks: :meth:`IndexFacade._head` (a fitted state whose configuration, transform
and query map stand for the whole index, ``None`` before the first fit),
:meth:`IndexFacade._insert_pending` (fit if needed, then insert checked batches; the write
lock is held) and :meth:`IndexFacade._search_fitted` (search checked query vectors; the read
lock is held).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from esrag.index import query_pass
from esrag.index._lock import RWLock
from esrag.index.batch import (
    DocBatch,
    RawPart,
    check_doc_texts,
    check_ids,
    check_metadatas,
    checked_batches,
    encoded_parts,
    vector_parts,
)
from esrag.index.config import CascadeConfig, SearchMode, check_exit_margin
from esrag.index.docstore import validate_filter
from esrag.index.embedder import EmbedderAdapter
from esrag.index.query import QueryMap
from esrag.index.results import SearchResult
from esrag.index.search import check_queries, check_search_args
from esrag.index.state import IndexState
from esrag.index.transforms import FittedTransform
from esrag.validation import check_batch_size, check_texts, default_shortlist

__all__ = ["IndexFacade"]


class IndexFacade:
    """The shared part of the index facades (see the module docstring)."""

    def __init__(self, embedder: Any | None = None, config: CascadeConfig | None = None) -> None:
        if config is None:
            config = CascadeConfig()
        if not isinstance(config, CascadeConfig):
            raise TypeError(f"config must be a CascadeConfig, got {type(config).__name__}")
        self._config = config
        self._adapter = EmbedderAdapter(embedder, config) if embedder is not None else None
        self._lock = RWLock()

    # ------------------------------------------------------------------ hooks
    def _head(self) -> IndexState | None:
        """A fitted state that speaks for the index (``None`` until the first fit)."""
        raise NotImplementedError

    def _insert_pending(self, pending: list[DocBatch]) -> None:
        """Fit the coarse stage on ``pending`` if there is none yet, then insert it (write lock held)."""
        raise NotImplementedError

    def _search_fitted(
        self,
        source: np.ndarray,
        fine_q: np.ndarray | None,
        *,
        k: int,
        shortlist: int,
        filter: Mapping[str, Any] | None,
        mode: SearchMode,
        exit_margin: float | None = None,
    ) -> SearchResult:
        """Search checked, normalised query vectors in the fitted index (read lock held)."""
        raise NotImplementedError

    def _mode_in_force(self, mode: SearchMode) -> SearchMode:
        """The mode a search asked in ``mode`` runs in (a hook: a coarse-only index answers a
        cascade search in coarse mode); raises when the index cannot answer ``mode`` now.
        """
        return mode

    def _check_writable(self) -> None:
        """Raise when the index refuses writes now (a hook; the default never refuses)."""

    def _search_staged(
        self,
        queries: list[str],
        *,
        k: int,
        shortlist: int,
        filter: Mapping[str, Any] | None,
        exit_margin: float | None,
    ) -> SearchResult | None:
        """A cascade text search run progressively / with early exit (``None``: not here; the
        caller encodes and searches sequentially). Takes the read lock itself.
        """
        return None

    def _exit_margin(self, exit_margin: float | None) -> float | None:
        """The early-exit margin of a search: the one given (checked; ``inf``: none), else the config's."""
        if exit_margin is None:
            return self.config.exit_margin
        margin = check_exit_margin(exit_margin)
        return None if math.isinf(margin) else margin

    # ------------------------------------------------------------- properties
    @property
    def config(self) -> CascadeConfig:
        """The index's settings."""
        head = self._head()
        return head.config if head is not None else self._config

    @property
    def embedder(self) -> Any | None:
        """The embedder given at construction or load (``None`` for a vectors-only index)."""
        return self._adapter.original if self._adapter else None

    @property
    def query_map(self) -> QueryMap | None:
        """How shallow queries reach the documents' spaces (``None``: full depth, or not fitted yet)."""
        head = self._head()
        return head.query_map if head is not None else None

    @property
    def transform(self) -> FittedTransform | None:
        """The fitted coarse transform (``None`` until the first documents arrive)."""
        head = self._head()
        return head.transform if head is not None else None

    @property
    def source_dim(self) -> int | None:
        """Width of the coarse source vectors (``None`` while unknown)."""
        head = self._head()
        if head is not None:
            return head.source_dim
        return self._adapter.source_dim if self._adapter else None

    @property
    def fine_dim(self) -> int | None:
        """Width of the fine vectors (``None`` while unknown)."""
        head = self._head()
        if head is not None:
            return head.fine_dim
        return self._adapter.fine_dim if self._adapter else None

    @property
    def coarse_dim(self) -> int | None:
        """Width of the coarse vectors after the transform (``None`` until fitted)."""
        head = self._head()
        return head.transform.dim if head is not None else None

    @property
    def same_vectors(self) -> bool:
        """Whether one query vector feeds both stages (plain Embeddings, or coarse view = fine view)."""
        if self._adapter is not None:
            return self._adapter.same_vectors
        return self.source_dim is not None and self.source_dim == self.fine_dim

    # -------------------------------------------------------------- ingestion
    def _require_adapter(self) -> EmbedderAdapter:
        if self._adapter is None:
            raise RuntimeError(
                f"this index has no embedder (built or loaded from vectors); pass embedder=... "
                f"to {type(self).__name__}/load(), or use add_embeddings()/search_embeddings()"
            )
        return self._adapter

    def _unfitted(self) -> bool:
        return self._head() is None

    @staticmethod
    def _filled(
        index: Any,
        texts: Sequence[str],
        ids: Sequence[str | None] | None,
        metadatas: Sequence[dict[str, Any] | None] | None,
        batch_size: int,
        show_progress_bar: bool | None,
    ) -> Any:
        """``index`` after :meth:`add` of a corpus that must not be empty (what ``build`` does)."""
        texts = check_doc_texts(texts)
        if not texts:
            raise ValueError("cannot build an index from an empty corpus (0 texts)")
        index.add(texts, ids, metadatas, batch_size=batch_size, show_progress_bar=show_progress_bar)
        return index

    def add(
        self,
        texts: Sequence[str],
        ids: Sequence[str | None] | None = None,
        metadatas: Sequence[dict[str, Any] | None] | None = None,
        *,
        batch_size: int = 64,
        show_progress_bar: bool | None = None,
    ) -> list[str]:
        """Encode and upsert documents in batches; returns their ids (generated if missing).

        The whole call is checked first (ids, texts, metadata: see :mod:`esrag.index.batch`
        for what metadata may hold and how numpy scalars and dates are converted), so bad
        input changes nothing; each batch is then stored all-or-nothing.
        """
        self._check_writable()
        texts = check_doc_texts(texts)
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
        """Upsert documents from precomputed vectors (L2-normalised here); checked as a whole
        before anything is stored, like :meth:`add`.

        ``query_source``: the documents' (query layer, full width) vectors, which fit the ridge
        query map of a shallow-query index (``CascadeConfig.query_layer``); used only while the
        index is being fitted.
        """
        self._check_writable()
        doc_ids, parts = vector_parts(
            coarse_source, fine, ids, texts, metadatas, query_source, dims=(self.source_dim, self.fine_dim)
        )
        self._ingest(parts)
        return doc_ids

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
                if self._unfitted() and sum(map(len, pending)) < self.config.train_size:
                    continue  # keep collecting the documents that fit the coarse stage
                self._insert_pending(pending)
            pending = []
        if pending:
            with self._lock.write():
                self._insert_pending(pending)

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
        texts, adapter, head = check_texts(queries), self._require_adapter(), self._head()
        config, qmap = (head.config, head.query_map) if head is not None else (self._config, None)
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
        exit_margin: float | None = None,
    ) -> SearchResult:
        """Search with text queries (a str counts as one query).

        ``mode="coarse"`` encodes only the coarse source view (the pass stops at the coarse
        layer); the other modes encode both views in one pass, which for a shallow-query index
        (``CascadeConfig.query_layer``) stops at the query layer in every mode. A cascade whose
        coarse layer is shallower than the pass starts the coarse search at the coarse layer
        when ``CascadeConfig.progressive`` is set (:mod:`esrag.index.progressive`; same results).
        ``exit_margin`` (default ``CascadeConfig.exit_margin``; ``inf``: never): cascade
        queries whose coarse shortlist is that decisive are answered from it, their pass
        stopped at the coarse layer (:mod:`esrag.index.early_exit`); ``result.exited`` says which.
        """
        queries = [queries] if isinstance(queries, str) else check_texts(queries)
        k, size, mode = check_search_args(k, default_shortlist(shortlist, k, self.config.shortlist), mode)
        margin = self._exit_margin(exit_margin)
        if filter is not None:
            validate_filter(filter)
        if not queries:
            return SearchResult([], [])
        if self._unfitted() and self._adapter is not None:  # nothing to find (and no query map yet)
            return SearchResult([[] for _ in queries], [[] for _ in queries], mode=mode.value)
        mode = self._mode_in_force(mode)
        if mode is SearchMode.CASCADE:
            staged = self._search_staged(queries, k=k, shortlist=size, filter=filter, exit_margin=margin)
            if staged is not None:
                return dataclasses.replace(staged, mode=mode.value)
        source, fine = self._encode(queries, mode, False)
        return self.search_embeddings(
            source, fine, k, shortlist, filter, mode, math.inf if margin is None else margin
        )

    def search_embeddings(
        self,
        coarse_source: np.ndarray,
        fine: np.ndarray | None,
        k: int = 10,
        shortlist: int | None = None,
        filter: Mapping[str, Any] | None = None,
        mode: SearchMode | str = SearchMode.CASCADE,
        exit_margin: float | None = None,
    ) -> SearchResult:
        """Search with precomputed (Q, source_dim) and (Q, fine_dim) query vectors.

        ``fine`` may be ``None`` with ``mode="coarse"`` (the fine stage is not used).
        ``exit_margin``: as in :meth:`search` (the fine vectors are given, so only the
        results change: exited queries are answered from the coarse shortlist).
        """
        k, shortlist, mode = check_search_args(
            k, default_shortlist(shortlist, k, self.config.shortlist), mode
        )
        margin = self._exit_margin(exit_margin) if mode is SearchMode.CASCADE else None
        if filter is not None:
            validate_filter(filter)
        source, fine_q = check_queries(coarse_source, fine, mode, self.source_dim, self.fine_dim)
        with self._lock.read():
            if self._unfitted():
                return SearchResult(
                    [[] for _ in range(source.shape[0])], [[] for _ in source], mode=mode.value
                )
            mode = self._mode_in_force(mode)
            result = self._search_fitted(
                source,
                fine_q,
                k=k,
                shortlist=shortlist,
                filter=filter,
                mode=mode,
                exit_margin=margin if mode is SearchMode.CASCADE else None,
            )
        return dataclasses.replace(result, mode=mode.value)
