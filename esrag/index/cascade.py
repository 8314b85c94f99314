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

import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from esrag._progress import progress
from esrag.errors import CoarseOnlyError
from esrag.index import progressive, query_pass, shallow
from esrag.index import state as st
from esrag.index.batch import DocBatch, check_doc_texts, check_ids, check_metadatas
from esrag.index.config import CascadeConfig, QueryMapKind, SearchMode, Transform
from esrag.index.embedder import EmbedderAdapter
from esrag.index.facade import IndexFacade
from esrag.index.fill import commit_chunk
from esrag.index.format import Manifest, is_index_folder, load_state, read_manifest, save_state
from esrag.index.identity import ModelCheck, identity_fields
from esrag.index.rebuild import initial_state, reconfigured
from esrag.index.results import IndexedDocument, SearchResult
from esrag.index.search import search_state
from esrag.index.sharded import ShardedIndex
from esrag.index.shardset import is_sharded_folder
from esrag.validation import check_batch_size, check_dim, check_int, check_strings

__all__ = ["CascadeIndex", "IndexedDocument", "SearchResult"]

logger = logging.getLogger(__name__)


class CascadeIndex(IndexFacade):
    """Two-stage (coarse FAISS shortlist → exact fine rerank) index with documents."""

    def __init__(self, embedder: Any | None = None, config: CascadeConfig | None = None) -> None:
        super().__init__(embedder, config)
        self._state: st.IndexState | None = None
        self._worker: ThreadPoolExecutor | None = None
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
        shallow_first: bool = False,
    ) -> CascadeIndex:
        """Encode a corpus in batches, fit the transform, train the coarse index, add all.

        ``shallow_first``: encode the documents only to the coarse layer and return a
        *coarse-only* index, searchable at once in coarse mode (save it, then
        :meth:`fill_fine` fills in the fine vectors, resumably); see :mod:`esrag.index.shallow`.
        """
        if not shallow_first:
            return cls._filled(cls(embedder, config), texts, ids, metadatas, batch_size, show_progress_bar)
        index = cls(embedder, config)
        texts = check_doc_texts(texts)
        docs = (check_ids(ids, len(texts)), texts, check_metadatas(metadatas, len(texts)))
        check_batch_size(batch_size)
        if not texts:
            raise ValueError("cannot build an index from an empty corpus (0 texts)")
        shallow.check_shallow_first(index._adapter, index.config)
        assert index._adapter is not None
        index._state = shallow.build_coarse_only(
            index._adapter, index.config, docs, batch_size, show_progress_bar
        )
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

    # ------------------------------------------------------------- the state
    def _head(self) -> st.IndexState | None:
        return self._state

    def __len__(self) -> int:
        return len(self._state) if self._state is not None else 0

    def __contains__(self, doc_id: object) -> bool:
        return self._state is not None and doc_id in self._state.rows

    def ids(self) -> list[str]:
        """Live document ids in row order (the order :meth:`reconfigure` expects)."""
        with self._lock.read():
            return st.live_ids(self._state) if self._state is not None else []

    @property
    def coarse_only(self) -> bool:
        """Whether fine vectors are still being filled in (shallow-first): searches run in coarse
        mode and writes are refused until :meth:`fill_fine` completes.
        """
        state = self._state
        return state is not None and state.coarse_only

    def stats(self) -> dict[str, Any]:
        """Counts and settings: documents, rows, tombstones, index type, transform, dims, and
        ``mode``: ``"cascade"``, or ``"coarse-only: fine vectors for X of N documents"`` (and
        ``fine_vectors``: X) while a shallow-first build fills in.
        """
        with self._lock.read():
            if self._state is not None:
                return st.state_stats(self._state)
            return st.empty_stats(self.config, self.source_dim, self.fine_dim)

    def _check_writable(self) -> None:
        state = self._state
        if state is not None and state.coarse_only:
            raise CoarseOnlyError(
                f"the index is {state.mode_line()}: adds, upserts, deletes and reconfigure wait until "
                "fill_fine() completes (esrag build on its folder finishes it)"
            )

    def _mode_in_force(self, mode: SearchMode) -> SearchMode:
        state = self._state
        if state is None or not state.coarse_only or mode is SearchMode.COARSE:
            return mode
        if mode is SearchMode.FINE:
            raise ValueError(
                f"mode='fine' needs every fine vector, and the index is {state.mode_line()}: search in "
                "mode='cascade' or 'coarse' (both answer in coarse mode now), or fill_fine() first"
            )
        logger.debug("cascade search answered in coarse mode (%s)", state.mode_line())
        return SearchMode.COARSE

    def _insert_pending(self, pending: list[DocBatch]) -> None:
        self._check_writable()
        if self._state is None:
            check_dim("coarse_source", pending[0].source, self.source_dim)
            check_dim("fine", pending[0].fine, self.fine_dim)
            state = initial_state(self._config, self._adapter, pending)
            if self._adapter is not None:
                self._adapter.learn_dims(state.source_dim, state.fine_dim)
            self._state = state
        for batch in pending:
            st.insert(self._state, batch)

    def delete(self, ids: Iterable[str]) -> int:
        """Delete documents by id (missing ids are ignored); returns how many were removed."""
        wanted = check_strings(ids, "ids")
        self._check_writable()
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
        assert self._state is not None
        return search_state(
            self._state,
            source,
            fine_q,
            k=k,
            shortlist=shortlist,
            filter=filter,
            mode=mode,
            exit_margin=exit_margin,
        )

    def _search_staged(
        self,
        queries: list[str],
        *,
        k: int,
        shortlist: int,
        filter: Mapping[str, Any] | None,
        exit_margin: float | None,
    ) -> SearchResult | None:
        with self._lock.read():
            state, adapter = self._state, self._adapter
            if state is None or adapter is None or not adapter.elastic:
                return None
            plan = query_pass.query_plan(adapter, state.config, state.query_map, SearchMode.CASCADE)
            if not progressive.applies(adapter, plan, len(queries), state.config.progressive, exit_margin):
                return None
            if self._worker is None:
                self._worker = ThreadPoolExecutor(1, thread_name_prefix="esrag-coarse")
            return progressive.staged_search(
                state,
                adapter,
                plan,
                queries,
                k=k,
                shortlist=shortlist,
                filter=filter,
                exit_margin=exit_margin,
                submit=self._worker.submit,
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
        exit_margin: float | None = None,
        progressive: bool | None = None,
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
        Only ``shortlist``/``nprobe``/``ef_search``/``exit_margin`` (``inf``: none)/``progressive``
        rebuild nothing; only ``query_layer``/
        ``query_map`` refit the query map alone (from ``query_source``, the documents'
        query-layer vectors in :meth:`ids` order, else re-encoding the fitting documents).
        """
        given = {"coarse_layer": coarse_layer, "coarse_dim": coarse_dim, "transform": transform}
        given.update(index_type=index_type, shortlist=shortlist, nprobe=nprobe, ef_search=ef_search)
        given.update(exit_margin=exit_margin, progressive=progressive)
        given.update(query_layer=query_layer, query_map=query_map)
        changes = {name: value for name, value in given.items() if value is not None}
        new_cfg = self.config.replace(**changes)
        self._check_writable()
        with self._lock.write():
            adapter = EmbedderAdapter(self._adapter.original, new_cfg) if self._adapter else None
            if self._state is not None:
                sources = (coarse_source, query_source)
                self._state = reconfigured(
                    self._state, new_cfg, set(changes), adapter, sources, batch_size, show_progress_bar
                )
            self._config, self._adapter = new_cfg, adapter

    # ------------------------------------------------------------- fill-in
    def fill_fine(
        self,
        folder: str | os.PathLike[str] | None = None,
        *,
        chunk_size: int = 1024,
        batch_size: int = 64,
        show_progress_bar: bool | None = None,
    ) -> int:
        """Fill in the fine vectors of a coarse-only (shallow-first) index; returns how many.

        Encodes the stored texts to the fine layer ``chunk_size`` documents at a time (rounded up
        to whole batches). With ``folder`` each chunk is committed there atomically (the index is
        saved there first unless it was loaded from or saved to it), so an interrupted fill-in
        (Ctrl-C, a kill) resumes with ``CascadeIndex.load(folder, encoder).fill_fine(folder)``;
        once the last chunk is in, the complete index is saved there as an ordinary version and
        searches cascade. Searches run (in coarse mode) while it works. Does nothing for an index
        that is complete (except consolidating a ``folder`` still holding fine parts).
        """
        check_int(chunk_size, "chunk_size", minimum=1, expected="a positive int")
        check_batch_size(batch_size)
        state, adapter = self._state, self._adapter
        if state is None:
            return 0
        if state.coarse_only and adapter is None:
            raise ValueError("fill_fine needs the index's encoder: load the index with it")
        if folder is not None and state.coarse_only and self._saved_version(folder) is None:
            self.save(folder)
        total, filled = state.rows.num_rows, len(state.fine)
        bar = progress(total=total, desc="Fine vectors", show=show_progress_bar, unit="doc")
        bar.update(filled)
        try:
            for start, stop in shallow.fill_chunks(filled, total, chunk_size, batch_size):
                assert adapter is not None
                vectors = shallow.encode_fine(adapter, state, start, stop, batch_size)
                with self._lock.write():
                    if self._state is not state:
                        raise RuntimeError("the index was cleared during fill_fine()")
                    shallow.append_fine(state, start, vectors)
                    if folder is not None and stop < total:
                        self._commit(folder, start, stop)
                bar.update(stop - start)
        finally:
            bar.close()
        if folder is not None and self.manifest is not None and self.manifest.fine_parts is not None:
            self.save(folder)  # complete: an ordinary version, one fine.npy
        return total - filled

    def _commit(self, folder: str | os.PathLike[str], start: int, stop: int) -> None:
        """Commit rows ``start:stop`` to ``folder`` (the whole index when an earlier commit failed)."""
        assert self._state is not None and self.manifest is not None and self.manifest.version
        if self.manifest.fine_count == start:
            self.manifest = commit_chunk(folder, self._state, start, stop, self.manifest.version)
        else:
            self.save(folder)

    def _saved_version(self, folder: str | os.PathLike[str]) -> str | None:
        """The version id of ``folder`` when it holds what this index last saved or loaded."""
        if self.manifest is None or not is_index_folder(folder) or is_sharded_folder(folder):
            return None
        version = read_manifest(folder, verify=False).version
        return version if version == self.manifest.version else None

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
    ) -> CascadeIndex | ShardedIndex:
        """Load an index folder; refuses corrupted files and a different model.

        A sharded folder (``esrag build --ray``, :meth:`ShardedIndex.save`) loads as a
        :class:`~esrag.index.sharded.ShardedIndex`, which has this class's API.
        """
        if is_sharded_folder(folder):
            return ShardedIndex.load(folder, embedder, verify=verify, mmap=mmap)
        check = ModelCheck(Path(folder), embedder)
        state, manifest = load_state(folder, verify=verify, mmap=mmap, check=check)
        query_pass.check_loaded_map(check.adapter, state.config, state.query_map, str(folder))
        index = cls(None, state.config)
        index._adapter = check.adapter
        index._state = state
        index.manifest = manifest
        return index
