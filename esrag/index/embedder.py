"""Uniform access to the two kinds of embedders an index accepts.

* an elastic ESE encoder (``esrag.encoder.EspressoEncoder``, or a wrapper exposing one as
  ``.encoder``, such as :class:`~esrag.langchain.embeddings.EspressoEmbeddings`): one
  ``encode`` pass yields the coarse source view (Lc, hidden) and the fine view (Ld, dd);
* any LangChain ``Embeddings``: its L2-normalised vector is both the coarse source and the
  fine vector.

Views of a wrapper: when the wrapper has ``document_view`` and ``query_view`` (as
``EspressoEmbeddings`` does) they are the fine views: documents are stored with
``document_view`` and queries are reranked with ``query_view`` (both have the same dim), so
the index ranks like the wrapper's own ``embed_documents``/``embed_query``. The coarse
source view stays ``(CascadeConfig.coarse_layer, hidden)`` and comes from the same encoder
pass. Setting ``CascadeConfig.fine_view`` as well is allowed only when it equals both
views; otherwise it is a ``ValueError`` (silently preferring one of the two would index
with a view the caller did not ask for).

Query layer: ``CascadeConfig.query_layer`` moves a bare encoder's query view to that layer (a
wrapper's ``query_view`` already names its layer; both given, they must agree). Shallower
than the fine view, queries are shallow (see :mod:`esrag.index.query`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from esrag._arrays import l2_normalize
from esrag.encoder.views import View, check_view
from esrag.errors import ModelMismatchError
from esrag.index.config import CascadeConfig

__all__ = ["EmbedderAdapter", "is_elastic"]


def is_elastic(obj: object) -> bool:
    """Duck-typed check for an ESE encoder (``num_layers``, ``hidden_size``, ``encode``)."""
    return all(hasattr(obj, name) for name in ("num_layers", "hidden_size", "encode", "default_view"))


def _unwrap(embedder: Any) -> tuple[Any, tuple[View, View] | None]:
    """(the elastic encoder inside ``embedder``, or ``embedder``; the wrapper's (document,
    query) views when it is a wrapper that has them).
    """
    if is_elastic(embedder):
        return embedder, None
    inner = getattr(embedder, "encoder", None)
    if inner is None or not is_elastic(inner):
        return embedder, None
    doc, query = getattr(embedder, "document_view", None), getattr(embedder, "query_view", None)
    if isinstance(doc, View) and isinstance(query, View):
        return inner, (doc, query)
    return inner, None


def _config_fingerprint(embedder: Any) -> str:
    kind = type(embedder)
    payload: dict[str, Any] = {"class": f"{kind.__module__}.{kind.__qualname__}"}
    dump = getattr(embedder, "model_dump", None)
    if callable(dump):
        try:
            payload["fields"] = dump()
        except Exception:  # pragma: no cover - exotic models
            payload["fields"] = None
    text = json.dumps(payload, sort_keys=True, default=repr)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _query_view(config: CascadeConfig, query: View, from_wrapper: bool, layers: int) -> View:
    """The query view with ``CascadeConfig.query_layer`` applied (it must agree with a wrapper's)."""
    layer = config.query_layer
    if layer is None or layer == query.layer:
        return query
    if from_wrapper:
        raise ModelMismatchError(
            f"CascadeConfig.query_layer {layer} conflicts with the embeddings' query_view {query}: give "
            f"the embeddings a query_view at layer {layer} (or pass the bare encoder), or leave "
            "query_layer unset to use the embeddings' view"
        )
    if not 1 <= layer <= layers:
        raise ValueError(f"CascadeConfig.query_layer {layer} is outside the encoder's layers 1..{layers}")
    return View(layer, query.dim)


class EmbedderAdapter:
    """Encodes documents and queries into (coarse source, fine) float32 arrays."""

    def __init__(self, embedder: Any, config: CascadeConfig) -> None:
        self.original = embedder
        self.model, wrapper_views = _unwrap(embedder)
        self.elastic = is_elastic(self.model)
        self.query_view: View | None = None
        """Fine view of the queries (the wrapper's ``query_view``; else :attr:`fine_view` at
        ``CascadeConfig.query_layer`` when set)."""
        self.wrapper_query_view = wrapper_views is not None
        """Whether the query view is the wrapper's own (its ``embed_query`` view)."""
        if self.elastic:
            enc = self.model
            layers, hidden = int(enc.num_layers), int(enc.hidden_size)
            fine, query = self._fine_views(config, wrapper_views, enc.default_view)
            query = _query_view(config, query, wrapper_views is not None, layers)
            layer = config.coarse_layer or layers
            if not 1 <= layer <= layers:
                raise ValueError(
                    f"CascadeConfig.coarse_layer {layer} is outside the encoder's layers 1..{layers}"
                )
            self.source_view = View(layer, hidden)
            label = "CascadeConfig.fine_view" if config.fine_view is not None else "fine view"
            self.fine_view = check_view(fine, label, layers, hidden)
            self.query_view = check_view(query, "query view", layers, hidden)
            if self.query_view.dim != self.fine_view.dim:
                raise ValueError(
                    f"query_view {self.query_view} and document_view {self.fine_view} of "
                    f"{type(embedder).__name__} must have the same dim"
                )
            self.source_dim: int | None = self.source_view.dim
            self.fine_dim: int | None = self.fine_view.dim
            self.name = str(getattr(enc, "name", type(enc).__name__))
            self.kind = "elastic"
        else:
            if not (hasattr(self.model, "embed_documents") and hasattr(self.model, "embed_query")):
                raise TypeError(
                    "embedder must be an esrag EspressoEncoder or a LangChain Embeddings, "
                    f"got {type(embedder).__name__}"
                )
            self.source_view = self.fine_view = None
            self.source_dim = self.fine_dim = None  # known after the first call
            self.name = f"{type(self.model).__module__}.{type(self.model).__qualname__}"
            self.kind = "embeddings"

    @staticmethod
    def _fine_views(
        config: CascadeConfig, wrapper_views: tuple[View, View] | None, default: View
    ) -> tuple[View, View]:
        """(document fine view, query fine view); see the module docstring."""
        if wrapper_views is None:
            fine = config.fine_view or default
            return fine, fine
        doc, query = wrapper_views
        if config.fine_view is not None and (config.fine_view != doc or config.fine_view != query):
            raise ValueError(
                f"CascadeConfig.fine_view {config.fine_view} conflicts with the embeddings' views "
                f"(document_view {doc}, query_view {query}): leave fine_view unset to use the "
                "embeddings' views, or make them agree"
            )
        return doc, query

    @property
    def hidden(self) -> int:
        """Full width of the elastic encoder's layers."""
        return int(self.model.hidden_size)

    def learn_dims(self, source_dim: int, fine_dim: int) -> None:
        """Record the vector widths of a plain ``Embeddings`` (known after its first call)."""
        if self.source_dim is None:
            self.source_dim, self.fine_dim = int(source_dim), int(fine_dim)

    @property
    def fingerprint(self) -> str:
        """Identity: the weights' SHA-256 (ESE encoder), else a hash of the class and settings."""
        if self.elastic:
            return str(self.model.fingerprint)
        return _config_fingerprint(self.model)

    @property
    def identity(self) -> dict[str, Any]:
        """Everything that changes a stored or query vector (JSON-able; see :mod:`.identity`):
        the encoder's own :meth:`identity` (weights, tokenizer, pooling, max length) or, for a
        plain ``Embeddings``, its fingerprint; the views; the normalisation.
        """
        out: dict[str, Any] = {"normalize": "l2"}
        if not self.elastic:
            return {**out, "embeddings": self.fingerprint}
        own = getattr(self.model, "identity", None)
        out.update(own() if callable(own) else {"weights": self.fingerprint})
        for name, view in (
            ("coarse_source_view", self.source_view),
            ("fine_view", self.fine_view),
            ("query_view", self.query_view),
        ):
            out[name] = None if view is None else [int(view.layer), int(view.dim)]
        return out

    @property
    def same_vectors(self) -> bool:
        """Whether the coarse source and the fine vector are the same vector."""
        return not self.elastic or self.source_view == self.fine_view

    def encode_views(self, texts: Sequence[str], views: list[View], batch_size: int = 64) -> list[np.ndarray]:
        """One elastic encoder pass over ``texts`` (it stops at the deepest view's layer): one
        float32 array per view asked, in order.
        """
        return self._encode(texts, views, batch_size)

    QUERY_BATCH = 64
    """Texts per batch of a query pass (:meth:`encode_views`, :meth:`encode_queries`)."""

    @property
    def staged(self) -> bool:
        """Whether the encoder reports each layer of a pass as it runs (``encode_staged``)."""
        return self.elastic and callable(getattr(self.model, "encode_staged", None))

    def encode_staged(
        self, texts: Sequence[str], views: list[View], on_layer: Callable[..., bool], batch_size: int = 64
    ) -> None:
        """The pass of :meth:`encode_views`, reported layer by layer (see
        ``EspressoEncoder.encode_staged``): ``on_layer(layer, positions, {view: array})``,
        ``False`` stops the batch's pass at that layer.
        """
        self.model.encode_staged(list(texts), list(dict.fromkeys(views)), on_layer, batch_size=batch_size)

    def _encode(self, texts: Sequence[str], views: list[View], batch_size: int) -> list[np.ndarray]:
        """One encoder pass over ``texts``: one float32 array per distinct view asked."""
        distinct = list(dict.fromkeys(views))
        arrays = self.model.encode(
            list(texts), views=distinct, batch_size=batch_size, show_progress_bar=False
        )
        by_view = dict(zip(distinct, (np.asarray(a, dtype=np.float32) for a in arrays), strict=True))
        return [by_view[v] for v in views]

    def _pair(
        self, texts: Sequence[str], fine: View | None, batch_size: int
    ) -> tuple[np.ndarray, np.ndarray]:
        assert self.source_view is not None and fine is not None
        source, fine_vectors = self._encode(texts, [self.source_view, fine], batch_size)
        return source, fine_vectors

    def _plain(self, vectors: list[list[float]]) -> tuple[np.ndarray, np.ndarray]:
        arr = np.asarray(vectors, dtype=np.float32)
        if arr.ndim != 2:
            raise ValueError(f"the embeddings returned an array of shape {arr.shape}, expected 2-D")
        arr = l2_normalize(arr)
        return arr, arr

    def encode_documents(
        self, texts: Sequence[str], *, batch_size: int = 64, query_source: bool = False
    ) -> tuple[np.ndarray, ...]:
        """(coarse source, fine) vectors of documents from one encoder pass; with
        ``query_source`` also their (query layer, full width) vectors, from the same pass (to
        fit a shallow-query map).
        """
        if self.elastic and query_source:
            assert self.source_view is not None and self.fine_view is not None and self.query_view
            extra = View(self.query_view.layer, self.hidden)
            return tuple(self._encode(texts, [self.source_view, self.fine_view, extra], batch_size))
        if self.elastic:
            return self._pair(texts, self.fine_view, batch_size)
        return self._plain(self.model.embed_documents(list(texts)))

    def encode_queries(self, texts: Sequence[str], *, batch_size: int = 64) -> tuple[np.ndarray, np.ndarray]:
        """(coarse source, fine) vectors of queries from one encoder pass."""
        if self.elastic:
            return self._pair(texts, self.query_view, batch_size)
        return self._plain([self.model.embed_query(t) for t in texts])

    def encode_query_sources(self, texts: Sequence[str], *, batch_size: int = 64) -> np.ndarray:
        """Only the coarse source vectors of queries (``mode="coarse"``): an elastic encoder's
        pass stops at the coarse layer.
        """
        if self.elastic:
            assert self.source_view is not None
            return self._encode(texts, [self.source_view], batch_size)[0]
        return self._plain([self.model.embed_query(t) for t in texts])[0]
