"""EspressoEmbeddings: a LangChain ``Embeddings`` over an elastic ESE encoder."""

from __future__ import annotations

import asyncio
import os
from typing import Any

from langchain_core.embeddings import Embeddings

from esrag.encoder import EspressoEncoder, View
from esrag.encoder.views import check_view
from esrag.validation import check_int

__all__ = ["EspressoEmbeddings"]


class EspressoEmbeddings(Embeddings):
    """LangChain embeddings from one (layer, dim) view of an :class:`EspressoEncoder`.

    Args:
        model_name_or_path: a model folder or hub name; ``None`` is the embedded default
            (all-MiniLM-L6-v2). Ignored when ``encoder`` is given.
        encoder: an already loaded encoder to share (e.g. with a cascade index).
        document_view / query_view: the views used by :meth:`embed_documents` and
            :meth:`embed_query`; default the encoder's default view (last layer, full width).
            Both must have the same dim, so that documents and queries are comparable.
        batch_size, show_progress_bar: passed to :meth:`EspressoEncoder.encode`.
        encoder_kwargs: extra keyword arguments of :class:`EspressoEncoder` (pooling,
            max_length, device) when it is loaded here.

    Vectors are L2-normalised lists of Python floats.
    """

    def __init__(
        self,
        model_name_or_path: str | os.PathLike[str] | None = None,
        *,
        encoder: EspressoEncoder | None = None,
        document_view: View | tuple[int, int] | str | None = None,
        query_view: View | tuple[int, int] | str | None = None,
        batch_size: int = 32,
        show_progress_bar: bool | None = None,
        encoder_kwargs: dict[str, Any] | None = None,
    ) -> None:
        if encoder is not None and (model_name_or_path is not None or encoder_kwargs):
            raise ValueError("pass either encoder or model_name_or_path/encoder_kwargs, not both")
        self.encoder = encoder or EspressoEncoder(model_name_or_path, **(encoder_kwargs or {}))
        shape = (self.encoder.num_layers, self.encoder.hidden_size)
        self.document_view = self._view(document_view, "document_view", *shape)
        self.query_view = self._view(query_view, "query_view", *shape)
        if self.document_view.dim != self.query_view.dim:
            raise ValueError(
                f"document_view {self.document_view} and query_view {self.query_view} must have the same dim"
            )
        check_int(batch_size, "batch_size", minimum=1, expected="a positive int")
        self.batch_size = batch_size
        self.show_progress_bar = show_progress_bar

    def _view(self, value: object, what: str, layers: int, hidden: int) -> View:
        if value is None:
            return self.encoder.default_view
        return check_view(value, what, layers, hidden)

    def _embed(self, texts: list[str], view: View) -> list[list[float]]:
        (vectors,) = self.encoder.encode(
            texts,
            [view],
            batch_size=self.batch_size,
            show_progress_bar=self.show_progress_bar,
        )
        return vectors.tolist()

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        """Embed documents with :attr:`document_view`."""
        return self._embed(texts, self.document_view)

    def embed_query(self, text: str) -> list[float]:
        """Embed one query with :attr:`query_view`."""
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, got {type(text).__name__}")
        return self._embed([text], self.query_view)[0]

    async def aembed_documents(self, texts: list[str]) -> list[list[float]]:
        """Async :meth:`embed_documents` (runs in a worker thread)."""
        return await asyncio.to_thread(self.embed_documents, texts)

    async def aembed_query(self, text: str) -> list[float]:
        """Async :meth:`embed_query` (runs in a worker thread)."""
        return await asyncio.to_thread(self.embed_query, text)
