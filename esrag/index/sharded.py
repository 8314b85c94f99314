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

import os
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from esrag.index import shard_states as ss
from esrag.index import state as st
from esrag.index.batch import DocBatch
from esrag.index.config import CascadeConfig, SearchMode
from esrag.index.embedder import EmbedderAdapter
from esrag.index.facade import IndexFacade
from esrag.index.identity import ModelCheck, identity_fields
from esrag.index.rebuild import LIGHT_SETTINGS, retune
from esrag.index.results import IndexedDocument, SearchResult
from esrag.index.shard_store import ShardSeed, load_shards, save_shards
from esrag.index.sharded_search import search_shards
from esrag.index.shardset import ShardSetManifest, shard_of
from esrag.validation import check_dim, check_int, check_strings

FANOUT_MIN_QUERIES = 8
"""Searches of fewer queries visit the shards in the calling thread: for one query at 1M
documents (4 shards, IVF) handing each shard's step to a thread cost more than it saved
(4.6 vs 3.2 ms per query; one index: 1.6 ms), batches fan out over threads."""

__all__ = ["ShardedIndex"]


def _refuse_query_layer(config: CascadeConfig) -> None:
    if config.query_layer is not None:
        raise ValueError(
            "a sharded index does not support shallow queries yet (CascadeConfig.query_layer "
            f"{config.query_layer}): build it as one CascadeIndex, or leave query_layer unset"
        )


class ShardedIndex(IndexFacade):
    """A cascade index split into ``shards`` shards that searches like one index."""

    def __init__(
        self, embedder: Any | None = None, config: CascadeConfig | None = None, *, shards: int = 2
    ) -> None:
        super().__init__(embedder, config)
        _refuse_query_layer(self._config)
        self.num_shards = check_int(shards, "shards", minimum=1, expected="a positive int")
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
        index = cls(embedder, config, shards=shards)
        return cls._filled(index, texts, ids, metadatas, batch_size, show_progress_bar)

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

    # ------------------------------------------------------------- the shards
    def _head(self) -> st.IndexState | None:
        return self._states[0] if self._states else None

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
        assert self._states is not None
        if exit_margin is not None:
            raise ValueError(
                "exit_margin (early exit) is not supported by a sharded index yet; search it "
                "without one (exit_margin=float('inf'))"
            )
        return search_shards(
            self._states,
            source,
            fine_q,
            k=k,
            shortlist=shortlist,
            filter=filter,
            mode=mode,
            map_fn=self._map if source.shape[0] >= FANOUT_MIN_QUERIES else map,
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
        _refuse_query_layer(new_cfg)
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
        index = cls(None, states[0].config, shards=len(states))  # refuses a query_layer config
        index._adapter = check.adapter
        index._states = states
        index._next_id = manifest.next_id
        index._clean = set(range(len(states)))
        index._folder = Path(folder).resolve()
        index.manifest = manifest
        return index
