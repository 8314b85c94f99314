"""ShardedIndex: one cascade index kept as several shards, with :class:`CascadeIndex`'s API.

Documents are routed to a shard by a stable hash of their id
(:func:`~esrag.index.shardset.shard_of`); every shard is an
:class:`~esrag.index.state.IndexState` of the single-index kind, and all of them share the
coarse transform and the trained coarse quantizer (fitted once, on the first ``train_size``
documents, exactly as one index fits them) and one counter of coarse ids. Searches fan out
over the shards on threads (FAISS and numpy release the GIL) and merge exactly
(:mod:`esrag.index.sharded_search`): with a Flat or IVF coarse stage the results are those
of one :class:`CascadeIndex` of the same documents added in the same order.

Saved as a sharded folder (:mod:`esrag.index.shardset`): each shard a self-contained index
folder under a top-level ``shards.json``. :meth:`CascadeIndex.load
<esrag.index.CascadeIndex.load>` and ``CascadeVectorStore.load`` open such a folder as a
:class:`ShardedIndex`. ``esrag build --ray`` (:mod:`esrag.scale.ray_build`) writes one from a
cluster.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from esrag.index import shard_states as ss
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
from esrag.index.config import CascadeConfig, SearchMode
from esrag.index.docstore import validate_filter
from esrag.index.embedder import EmbedderAdapter
from esrag.index.identity import ModelCheck, identity_fields
from esrag.index.rebuild import LIGHT_SETTINGS, retune
from esrag.index.results import IndexedDocument, SearchResult
from esrag.index.search import check_queries, check_search_args
from esrag.index.shard_store import ShardSeed, load_shards, save_shards
from esrag.index.sharded_search import search_shards
from esrag.index.shardset import ShardSetManifest, shard_of
from esrag.index.transforms import FittedTransform
from esrag.validation import (
    check_batch_size,
    check_dim,
    check_int,
    check_strings,
    check_texts,
    check_vectors,
    default_shortlist,
)

__all__ = ["ShardedIndex"]


class ShardedIndex:
    """A cascade index split into ``shards`` shards that searches like one index."""

    def __init__(
        self, embedder: Any | None = None, config: CascadeConfig | None = None, *, shards: int = 2
    ) -> None:
        if config is None:
            config = CascadeConfig()
        if not isinstance(config, CascadeConfig):
            raise TypeError(f"config must be a CascadeConfig, got {type(config).__name__}")
        self.num_shards = check_int(shards, "shards", minimum=1, expected="a positive int")
        self._config = config
        self._adapter = EmbedderAdapter(embedder, config) if embedder is not None else None
        self._lock = RWLock()
        self._states: list[st.IndexState] | None = None
        self._next_id = 0
        self._clean: set[int] = set()  # shards unchanged since the last save or load
        self._pool: ThreadPoolExecutor | None = None
        self._folder: Path | None = None  # the folder of the last save or load
        self.manifest: ShardSetManifest | None = None
        """The top-level manifest of the last save or load (``None`` before either)."""

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
        shards: int = 2,
        batch_size: int = 64,
        show_progress_bar: bool | None = None,
    ) -> ShardedIndex:
        """Encode a corpus, fit the shared coarse stage, add everything (see :meth:`CascadeIndex.build`)."""
        texts = check_texts(texts)
        if not texts:
            raise ValueError("cannot build an index from an empty corpus (0 texts)")
        index = cls(embedder, config, shards=shards)
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
        shards: int = 2,
    ) -> ShardedIndex:
        """Build from precomputed vectors (see :meth:`CascadeIndex.build_from_embeddings`)."""
        if len(coarse_source) == 0:
            raise ValueError("cannot build an index from an empty corpus (0 vectors)")
        index = cls(embedder, config, shards=shards)
        index.add_embeddings(coarse_source, fine, ids=ids, texts=texts, metadatas=metadatas)
        return index

    # ------------------------------------------------------------- properties
    @property
    def config(self) -> CascadeConfig:
        """The index's settings."""
        return self._states[0].config if self._states else self._config

    @property
    def embedder(self) -> Any | None:
        """The embedder given at construction or load (``None`` for a vectors-only index)."""
        return self._adapter.original if self._adapter else None

    @property
    def transform(self) -> FittedTransform | None:
        """The shared coarse transform (``None`` until the first documents arrive)."""
        return self._states[0].transform if self._states else None

    @property
    def source_dim(self) -> int | None:
        """Width of the coarse source vectors (``None`` while unknown)."""
        if self._states:
            return self._states[0].source_dim
        return self._adapter.source_dim if self._adapter else None

    @property
    def fine_dim(self) -> int | None:
        """Width of the fine vectors (``None`` while unknown)."""
        if self._states:
            return self._states[0].fine_dim
        return self._adapter.fine_dim if self._adapter else None

    @property
    def coarse_dim(self) -> int | None:
        """Width of the coarse vectors after the transform (``None`` until fitted)."""
        return self._states[0].transform.dim if self._states else None

    @property
    def same_vectors(self) -> bool:
        """Whether one query vector feeds both stages."""
        if self._adapter is not None:
            return self._adapter.same_vectors
        return self.source_dim is not None and self.source_dim == self.fine_dim

    def __len__(self) -> int:
        return sum(len(s) for s in self._states) if self._states else 0

    def __contains__(self, doc_id: object) -> bool:
        if not self._states or not isinstance(doc_id, str):
            return False
        return doc_id in self._states[shard_of(doc_id, self.num_shards)].rows

    def ids(self) -> list[str]:
        """Live document ids in coarse-id order (the order one index of them would list)."""
        with self._lock.read():
            return ss.live_ids(self._states) if self._states else []

    def stats(self) -> dict[str, Any]:
        """Counts and settings (as :meth:`CascadeIndex.stats`), summed over the shards, and ``shards``."""
        with self._lock.read():
            if not self._states:
                out = st.empty_stats(self.config, self.source_dim, self.fine_dim)
            else:
                out = ss.shard_stats(self._states)
            return {**out, "shards": self.num_shards}

    # -------------------------------------------------------------- ingestion
    def _require_adapter(self) -> EmbedderAdapter:
        if self._adapter is None:
            raise RuntimeError(
                "this index has no embedder (built or loaded from vectors); pass embedder=... "
                "to ShardedIndex/load(), or use add_embeddings()/search_embeddings()"
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
        encode = functools.partial(self._require_adapter().encode_documents, batch_size=batch_size)
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
    ) -> list[str]:
        """Upsert documents from precomputed vectors (L2-normalised here)."""
        source = check_vectors("coarse_source", coarse_source, self.source_dim)
        n = source.shape[0]
        fine_arr = check_vectors("fine", fine, self.fine_dim, n)
        texts_list = check_texts(texts) if texts is not None else [""] * n
        if len(texts_list) != n:
            raise ValueError(f"got {len(texts_list)} texts for {n} vectors")
        doc_ids = check_ids(ids, n)
        metas = check_metadatas(metadatas, n)
        self._ingest(vector_parts(doc_ids, texts_list, metas, source, fine_arr))
        return doc_ids

    def _ingest(self, parts: Iterable[RawPart]) -> None:
        """As :meth:`CascadeIndex._ingest`, routing every batch to its shards."""
        pending: list[DocBatch] = []
        for batch in checked_batches(parts):
            pending.append(batch)
            with self._lock.write():
                if self._states is None and sum(map(len, pending)) < self.config.train_size:
                    continue
                self._insert_pending(pending)
            pending = []
        if pending:
            with self._lock.write():
                self._insert_pending(pending)

    def _insert_pending(self, pending: list[DocBatch]) -> None:
        if self._states is None:
            check_dim("coarse_source", pending[0].source, self.source_dim)
            check_dim("fine", pending[0].fine, self.fine_dim)
            fitted = st.new_state(
                self._config, pending, same_vectors=bool(self._adapter and self._adapter.same_vectors)
            )
            if self._adapter is not None:
                self._adapter.learn_dims(fitted.source_dim, fitted.fine_dim)
            seed = ShardSeed.of(fitted)
            self._states = [seed.empty_state() for _ in range(self.num_shards)]
        for batch in pending:
            self._route(batch)

    def _route(self, batch: DocBatch) -> None:
        """Insert a batch into its shards, with coarse ids from the shared counter."""
        assert self._states is not None
        self._clean -= ss.route(self._states, batch, self._next_id)
        self._next_id += len(batch)

    def delete(self, ids: Iterable[str]) -> int:
        """Delete documents by id (missing ids are ignored); returns how many were removed."""
        wanted = check_strings(ids, "ids")
        with self._lock.write():
            if self._states is None:
                return 0
            removed, touched = ss.remove(self._states, wanted)
            self._clean -= touched
            return removed

    def clear(self) -> None:
        """Remove every document and forget the fitted transform and coarse index."""
        with self._lock.write():
            self._config = self.config
            self._states, self._next_id, self._clean = None, 0, set()

    def get_by_ids(self, ids: Sequence[str]) -> list[IndexedDocument]:
        """Documents for the given ids, in that order; unknown ids are skipped."""
        with self._lock.read():
            return ss.documents(self._states, list(ids)) if self._states else []

    def fine_vectors(self, ids: Sequence[str]) -> tuple[list[str], np.ndarray]:
        """(found ids, their fine vectors as float32 (n, fine_dim)); unknown ids are skipped."""
        with self._lock.read():
            if not self._states:
                return [], np.zeros((0, self.fine_dim or 0), dtype=np.float32)
            return ss.fine_vectors_of(self._states, list(ids))

    # ----------------------------------------------------------------- search
    def encode_queries(self, queries: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """(coarse source, fine) query vectors from one encoder pass."""
        return self._require_adapter().encode_queries(check_texts(queries))

    def encode_query_sources(self, queries: Sequence[str]) -> np.ndarray:
        """Coarse source query vectors only (the encoder pass stops at the coarse layer)."""
        return self._require_adapter().encode_query_sources(check_texts(queries))

    def search(
        self,
        queries: str | Sequence[str],
        k: int = 10,
        shortlist: int | None = None,
        filter: Mapping[str, Any] | None = None,
        mode: SearchMode | str = SearchMode.CASCADE,
    ) -> SearchResult:
        """Search with text queries (see :meth:`CascadeIndex.search`)."""
        queries = [queries] if isinstance(queries, str) else check_texts(queries)
        _, _, mode = check_search_args(k, default_shortlist(shortlist, k, self.config.shortlist), mode)
        if filter is not None:
            validate_filter(filter)
        if not queries:
            return SearchResult([], [])
        if mode is SearchMode.COARSE:
            return self.search_embeddings(
                self.encode_query_sources(queries), None, k, shortlist, filter, mode
            )
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
        """Search with precomputed query vectors (see :meth:`CascadeIndex.search_embeddings`)."""
        k, shortlist, mode = check_search_args(
            k, default_shortlist(shortlist, k, self.config.shortlist), mode
        )
        if filter is not None:
            validate_filter(filter)
        source, fine_q = check_queries(coarse_source, fine, mode, self.source_dim, self.fine_dim)
        with self._lock.read():
            if not self._states:
                return SearchResult([[] for _ in range(source.shape[0])], [[] for _ in source])
            return search_shards(
                self._states,
                source,
                fine_q,
                k=k,
                shortlist=shortlist,
                filter=filter,
                mode=mode,
                map_fn=self._map,
            )

    def _map(self, fn: Any, shards: Iterable[int]) -> Iterable[Any]:
        if self.num_shards == 1:
            return map(fn, shards)
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.num_shards, thread_name_prefix="esrag-shard")
        return self._pool.map(fn, shards)

    # ------------------------------------------------------------- reconfigure
    def reconfigure(
        self,
        *,
        coarse_source: np.ndarray | None = None,
        batch_size: int = 64,
        show_progress_bar: bool | None = None,
        **settings: Any,
    ) -> None:
        """Rebuild the shared coarse stage with new settings (see :meth:`CascadeIndex.reconfigure`;
        ``settings``: ``coarse_layer``, ``coarse_dim``, ``transform``, ``index_type``,
        ``shortlist``, ``nprobe``, ``ef_search``). ``coarse_source`` rows are in :meth:`ids` order.
        """
        allowed = {"coarse_layer", "coarse_dim", "transform", "index_type", *LIGHT_SETTINGS}
        unknown = sorted(set(settings) - allowed)
        if unknown:
            raise TypeError(f"reconfigure: unexpected setting(s) {unknown}; supported: {sorted(allowed)}")
        changes = {name: value for name, value in settings.items() if value is not None}
        new_cfg = self.config.replace(**changes)
        with self._lock.write():
            adapter = EmbedderAdapter(self._adapter.original, new_cfg) if self._adapter else None
            if not self._states or (set(changes) <= LIGHT_SETTINGS and coarse_source is None):
                self._config, self._adapter = new_cfg, adapter
                if self._states:
                    self._states = [retune(s, new_cfg) for s in self._states]
                    self._clean.clear()
                return
            same = bool(adapter and adapter.same_vectors)
            sources = ss.refit_sources(self._states, coarse_source, adapter, batch_size, show_progress_bar)
            self._states = ss.refit(self._states, new_cfg, sources, same_vectors=same)
            self._config, self._adapter, self._clean = new_cfg, adapter, set()

    # ------------------------------------------------------------ persistence
    def save(self, folder: str | os.PathLike[str]) -> Path:
        """Write the index as a sharded folder (see :mod:`esrag.index.shardset`); into the
        folder it was loaded from or last saved to, only the shards that changed are written.
        """
        with self._lock.read():
            if not self._states:
                raise ValueError("cannot save an index that has never held documents (nothing is fitted)")
            same_folder = self._folder is not None and self._folder == Path(folder).resolve()
            self.manifest = save_shards(
                self._states,
                folder,
                identity_fields(self._adapter),
                next_id=self._next_id,
                clean=self._clean.__contains__,
                current=self.manifest if same_folder else None,
            )
            self._clean, self._folder = set(range(self.num_shards)), Path(folder).resolve()
        return Path(folder)

    @classmethod
    def load(
        cls,
        folder: str | os.PathLike[str],
        embedder: Any | None = None,
        *,
        verify: bool = True,
        mmap: bool = True,
    ) -> ShardedIndex:
        """Load a sharded folder; refuses corrupted files and a different model."""
        check = ModelCheck(Path(folder), embedder)
        states, manifest = load_shards(folder, verify=verify, mmap=mmap, check=check)
        index = cls(None, states[0].config, shards=len(states))
        index._adapter = check.adapter
        index._states = states
        index._next_id = manifest.next_id
        index._clean = set(range(len(states)))
        index._folder = Path(folder).resolve()
        index.manifest = manifest
        return index
