"""LangChain ``VectorStore`` and retriever over a :class:`~esrag.index.CascadeIndex`."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from langchain_core.callbacks import (
    AsyncCallbackManagerForRetrieverRun,
    CallbackManagerForRetrieverRun,
)
from langchain_core.documents import Document
from langchain_core.embeddings import Embeddings
from langchain_core.vectorstores import VectorStore, VectorStoreRetriever
from langchain_core.vectorstores.utils import maximal_marginal_relevance

from esrag.index import CascadeConfig, CascadeIndex, SearchMode
from esrag.validation import check_batch_size, default_shortlist

__all__ = ["CascadeRetriever", "CascadeVectorStore"]

logger = logging.getLogger(__name__)


class CascadeVectorStore(VectorStore):
    """A LangChain vector store backed by a two-stage cascade index.

    ``embedding`` is an ``esrag.encoder.EspressoEncoder`` (both views from one pass) or any
    LangChain ``Embeddings`` (its vector serves both stages). Search keyword arguments:
    ``k``, ``shortlist`` (coarse candidates reranked exactly), ``filter`` (metadata equality,
    ``{"$in": [...]}``), ``mode`` (``"cascade"``, ``"coarse"``, ``"fine"``).
    """

    def __init__(
        self,
        embedding: Any,
        config: CascadeConfig | None = None,
        *,
        index: CascadeIndex | None = None,
        batch_size: int = 64,
    ) -> None:
        self.batch_size = check_batch_size(batch_size)
        self.index = index if index is not None else CascadeIndex(embedding, config)
        self._embedding = embedding

    @property
    def embeddings(self) -> Embeddings | None:
        """The LangChain ``Embeddings`` given, or ``None`` for an esrag encoder."""
        return self._embedding if isinstance(self._embedding, Embeddings) else None

    @property
    def search_mode(self) -> str:
        """The mode searches run in: ``"cascade"``, or ``"coarse-only: fine vectors for X of N
        documents"`` while a shallow-first index fills in its fine vectors (searches then run in
        coarse mode and writes are refused; see ``CascadeIndex.fill_fine``).
        """
        return str(self.index.stats().get("mode", "cascade"))

    # ------------------------------------------------------------------ write
    def add_texts(
        self,
        texts: Iterable[str],
        metadatas: list[dict[str, Any]] | None = None,
        *,
        ids: list[str] | None = None,
        **kwargs: Any,
    ) -> list[str]:
        """Embed and upsert texts; ``None`` ids (or no ids) get a fresh uuid4."""
        batch_size = kwargs.pop("batch_size", self.batch_size)
        show = kwargs.pop("show_progress_bar", None)
        if kwargs:
            raise TypeError(
                f"add_texts: unexpected keyword argument(s) {sorted(kwargs)}; "
                "supported: metadatas, ids, batch_size, show_progress_bar"
            )
        texts = list(texts)
        if ids is not None and not any(i is not None for i in ids):
            ids = None
        return self.index.add(texts, ids, metadatas, batch_size=batch_size, show_progress_bar=show)

    def delete(self, ids: list[str] | None = None, **kwargs: Any) -> bool | None:
        """Delete by id (missing ids are ignored); ``ids=None`` deletes everything."""
        if kwargs:
            raise TypeError(f"delete: unexpected keyword argument(s) {sorted(kwargs)}; supported: ids")
        if ids is None:
            self.index.clear()
        else:
            self.index.delete(ids)
        return True

    def get_by_ids(self, ids: Sequence[str], /) -> list[Document]:
        """Stored documents for ``ids`` (unknown ids are skipped)."""
        return [
            Document(id=doc.id, page_content=doc.text, metadata=doc.metadata)
            for doc in self.index.get_by_ids(ids)
        ]

    # ----------------------------------------------------------------- search
    def _documents(self, ids: list[str], scores: list[float]) -> list[tuple[Document, float]]:
        by_id = {doc.id: doc for doc in self.index.get_by_ids(ids)}
        out = []
        for doc_id, score in zip(ids, scores, strict=True):
            doc = by_id.get(doc_id)
            if doc is not None:  # deleted between the search and the lookup
                out.append((Document(id=doc.id, page_content=doc.text, metadata=doc.metadata), score))
        return out

    def similarity_search_with_score(
        self,
        query: str,
        k: int = 4,
        filter: dict[str, Any] | None = None,
        *,
        shortlist: int | None = None,
        mode: SearchMode | str = SearchMode.CASCADE,
        exit_margin: float | None = None,
        **kwargs: Any,
    ) -> list[tuple[Document, float]]:
        """Documents most similar to ``query`` with their cosine similarity (higher is better).

        ``exit_margin``: early exit (see :meth:`CascadeIndex.search`; default the index's
        ``CascadeConfig.exit_margin``, ``inf``: never): a decisive query is answered from the
        coarse shortlist (coarse scores) and its encoder pass stops at the coarse layer.
        """
        _check_kwargs("similarity_search", kwargs, ("k", "filter", "shortlist", "mode", "exit_margin"))
        shortlist = default_shortlist(shortlist, k, self.index.config.shortlist)
        result = self.index.search(
            [query], k=k, shortlist=shortlist, filter=filter, mode=mode, exit_margin=exit_margin
        )
        if result.mode != SearchMode(mode).value:
            logger.info("searched in %s mode (the index is %s)", result.mode, self.search_mode)
        return self._documents(result.ids[0], result.scores[0])

    def similarity_search(
        self, query: str, k: int = 4, filter: dict[str, Any] | None = None, **kwargs: Any
    ) -> list[Document]:
        """Documents most similar to ``query`` (see :meth:`similarity_search_with_score`)."""
        return [doc for doc, _ in self.similarity_search_with_score(query, k, filter, **kwargs)]

    def _search_by_vector(
        self, embedding: list[float], k: int, filter: dict[str, Any] | None, shortlist: int | None
    ) -> tuple[np.ndarray, list[str], list[float]]:
        """(the query vector (1, dim), ids, scores) of a search with a fine-view vector."""
        vector = np.asarray(embedding, dtype=np.float32)[None, :]
        same = self.index.same_vectors
        mode = SearchMode.CASCADE if same else SearchMode.FINE
        shortlist = default_shortlist(shortlist, k, self.index.config.shortlist)
        if len(self.index) == 0:
            return vector, [], []
        result = self.index.search_embeddings(
            vector if same else np.zeros((1, self.index.source_dim or 1), np.float32),
            vector,
            k=k,
            shortlist=shortlist,
            filter=filter,
            mode=mode,
        )
        return vector, result.ids[0], result.scores[0]

    def similarity_search_by_vector(
        self,
        embedding: list[float],
        k: int = 4,
        filter: dict[str, Any] | None = None,
        *,
        shortlist: int | None = None,
        **kwargs: Any,
    ) -> list[Document]:
        """Search with a fine-view query vector.

        When the coarse source is a different view than the fine one (an ESE encoder with a
        shallow coarse layer) a single vector cannot feed both stages: this runs the exact
        fine-only search.
        """
        _check_kwargs("similarity_search_by_vector", kwargs, ("k", "filter", "shortlist"))
        _vector, ids, scores = self._search_by_vector(embedding, k, filter, shortlist)
        return [doc for doc, _ in self._documents(ids, scores)]

    def _mmr(self, query: np.ndarray, ids: list[str], k: int, lambda_mult: float) -> list[Document]:
        """The documents among ``ids`` re-selected for diversity (MMR on their fine vectors)."""
        found, vectors = self.index.fine_vectors(ids)
        if not found:
            return []
        picks = maximal_marginal_relevance(query, vectors, lambda_mult=lambda_mult, k=k)
        return self.get_by_ids([found[i] for i in picks])

    def max_marginal_relevance_search(
        self,
        query: str,
        k: int = 4,
        fetch_k: int = 20,
        lambda_mult: float = 0.5,
        filter: dict[str, Any] | None = None,
        *,
        shortlist: int | None = None,
        **kwargs: Any,
    ) -> list[Document]:
        """``fetch_k`` cascade results re-selected for diversity (MMR on the fine vectors)."""
        _check_kwargs("max_marginal_relevance_search", kwargs, _MMR_ARGS)
        if len(self.index) == 0:
            return []
        source, fine_q = self.index.encode_queries([query])
        result = self.index.search_embeddings(
            source,
            fine_q,
            k=max(fetch_k, k),
            shortlist=default_shortlist(shortlist, max(fetch_k, k), self.index.config.shortlist),
            filter=filter,
        )
        return self._mmr(fine_q[0], result.ids[0], k, lambda_mult)

    def max_marginal_relevance_search_by_vector(
        self,
        embedding: list[float],
        k: int = 4,
        fetch_k: int = 20,
        lambda_mult: float = 0.5,
        filter: dict[str, Any] | None = None,
        *,
        shortlist: int | None = None,
        **kwargs: Any,
    ) -> list[Document]:
        """MMR with a fine-view query vector: ``fetch_k`` results of
        :meth:`similarity_search_by_vector`, re-selected for diversity.
        """
        _check_kwargs("max_marginal_relevance_search_by_vector", kwargs, _MMR_ARGS)
        vector, ids, _scores = self._search_by_vector(embedding, max(fetch_k, k), filter, shortlist)
        return self._mmr(vector[0], ids, k, lambda_mult)

    def _select_relevance_score_fn(self) -> Any:
        return lambda score: max(0.0, min(1.0, (1.0 + score) / 2.0))

    # ------------------------------------------------------------ constructors
    @classmethod
    def from_texts(
        cls,
        texts: list[str],
        embedding: Any,
        metadatas: list[dict[str, Any]] | None = None,
        *,
        ids: list[str] | None = None,
        config: CascadeConfig | None = None,
        batch_size: int = 64,
        show_progress_bar: bool | None = None,
        **kwargs: Any,
    ) -> CascadeVectorStore:
        """Build a store from texts: fits the coarse transform on them and trains the index."""
        if kwargs:
            raise TypeError(
                f"from_texts: unexpected keyword argument(s) {sorted(kwargs)}; supported: metadatas, "
                "ids, config, batch_size, show_progress_bar"
            )
        store = cls(embedding, config, batch_size=batch_size)
        store.add_texts(texts, metadatas, ids=ids, show_progress_bar=show_progress_bar)
        return store

    # ------------------------------------------------------------ persistence
    def save(self, folder: str | os.PathLike[str]) -> Path:
        """Atomically write the index folder (see :meth:`CascadeIndex.save`)."""
        return self.index.save(folder)

    @classmethod
    def load(cls, folder: str | os.PathLike[str], embedding: Any, **kwargs: Any) -> CascadeVectorStore:
        """Load a saved store; refuses an ``embedding`` that is not the index's model."""
        index = CascadeIndex.load(folder, embedding, **kwargs)
        return cls(embedding, index.config, index=index)

    # -------------------------------------------------------------- retriever
    def as_retriever(self, **kwargs: Any) -> CascadeRetriever:
        """Retriever; ``search_kwargs={"k": ..., "shortlist": ..., "filter": ..., "exit_margin": ...}``."""
        tags = kwargs.pop("tags", None) or [*self._get_retriever_tags()]
        return CascadeRetriever(vectorstore=self, tags=tags, **kwargs)


_MMR_ARGS = ("k", "fetch_k", "lambda_mult", "filter", "shortlist")


def _check_kwargs(method: str, kwargs: dict[str, Any], supported: Sequence[str]) -> None:
    """Reject search keyword arguments ``method`` does not take, listing those it does."""
    if kwargs:
        raise TypeError(
            f"{method}: unexpected search argument(s) {sorted(kwargs)}; supported: {', '.join(supported)}"
        )


class CascadeRetriever(VectorStoreRetriever):
    """Retriever over a :class:`CascadeVectorStore`.

    ``k``, ``shortlist``, ``filter`` and ``exit_margin`` may be given directly (``CascadeRetriever(
    vectorstore=store, k=3)``) or in ``search_kwargs``; keyword arguments to ``invoke``
    override both.
    """

    vectorstore: CascadeVectorStore
    k: int | None = None
    shortlist: int | None = None
    filter: dict[str, Any] | None = None
    exit_margin: float | None = None

    @property
    def search_mode(self) -> str:
        """The mode in force (see :attr:`CascadeVectorStore.search_mode`)."""
        return self.vectorstore.search_mode

    def _merged(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        given = (("k", self.k), ("shortlist", self.shortlist), ("filter", self.filter))
        direct = {
            name: value for name, value in (*given, ("exit_margin", self.exit_margin)) if value is not None
        }
        return {**direct, **kwargs}

    def _get_relevant_documents(
        self, query: str, *, run_manager: CallbackManagerForRetrieverRun, **kwargs: Any
    ) -> list[Document]:
        return super()._get_relevant_documents(query, run_manager=run_manager, **self._merged(kwargs))

    async def _aget_relevant_documents(
        self, query: str, *, run_manager: AsyncCallbackManagerForRetrieverRun, **kwargs: Any
    ) -> list[Document]:
        return await super()._aget_relevant_documents(query, run_manager=run_manager, **self._merged(kwargs))
