"""The query's encoder pass: which views it encodes, how deep it runs, and how its vectors
reach the index's spaces (through the :class:`~esrag.index.query.QueryMap` of a shallow-query
index). Functions of the embedder adapter and the map; the facade
(:class:`~esrag.index.cascade.CascadeIndex`) calls them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from esrag.encoder.views import View
from esrag.errors import ModelMismatchError
from esrag.index.batch import DocBatch
from esrag.index.config import CascadeConfig, SearchMode
from esrag.index.embedder import EmbedderAdapter
from esrag.index.query import QueryMap, QuerySetup, query_setup

__all__ = [
    "QueryPlan",
    "check_loaded_map",
    "document_encoder",
    "encode_queries",
    "fit_query_vectors",
    "pass_depth",
    "query_plan",
    "resolved_config",
    "wants_query_source",
]

logger = logging.getLogger(__name__)


def resolved_config(
    config: CascadeConfig, adapter: EmbedderAdapter | None
) -> tuple[CascadeConfig, QuerySetup | None]:
    """``config`` with the effective query layer and map kind recorded when queries are
    shallow (so a later load with a bare encoder finds them), and the shallow-query setup.
    """
    setup = query_setup(config, adapter)
    if setup is None:
        return config, None
    return config.replace(query_layer=setup.layer, query_map=setup.kind), setup


def wants_query_source(config: CascadeConfig, adapter: EmbedderAdapter | None) -> bool:
    """Whether documents should also be encoded at the query layer (a ridge map is to be fitted)."""
    setup = query_setup(config, adapter)
    return setup is not None and setup.needs_fit


def document_encoder(
    adapter: EmbedderAdapter, config: CascadeConfig, unfitted: Callable[[], bool], batch_size: int
) -> Callable[[list[str]], tuple[np.ndarray, ...]]:
    """``encode(texts)`` of a batch of documents: ``(source, fine)``, plus their query-layer
    vectors while ``unfitted()`` says the ridge query map is still to be fitted.
    """
    fit_map = wants_query_source(config, adapter)

    def encode(texts: list[str]) -> tuple[np.ndarray, ...]:
        return adapter.encode_documents(texts, batch_size=batch_size, query_source=fit_map and unfitted())

    return encode


def fit_query_vectors(
    adapter: EmbedderAdapter | None, batches: Sequence[DocBatch], batch_size: int
) -> list[DocBatch]:
    """``batches`` with query-layer vectors wherever they are missing (encoded here from the
    texts; only when a concurrent ``clear()`` made the first batches after all the fitting ones).
    """
    if adapter is None or not adapter.elastic or all(b.query is not None for b in batches):
        return list(batches)
    assert adapter.query_view is not None
    wide = View(adapter.query_view.layer, adapter.hidden)
    out = []
    for batch in batches:
        if batch.query is None:
            logger.debug("encoding %d documents at layer %d to fit the query map", len(batch), wide.layer)
            (vectors,) = adapter.encode_views(batch.texts, [wide], batch_size)
            batch = DocBatch(batch.ids, batch.texts, batch.metadatas, batch.source, batch.fine, vectors)
        out.append(batch)
    return out


def _shallow_map(
    adapter: EmbedderAdapter, config: CascadeConfig, query_map: QueryMap | None
) -> QueryMap | None:
    """The query map to encode with: the fitted one, or a ``none`` map (which needs no fit)."""
    setup = query_setup(config, adapter)
    if setup is None:
        return None
    if query_map is not None:
        return query_map
    if setup.needs_fit:
        raise RuntimeError(
            f"the ridge query map for layer {setup.layer} is fitted with the first documents: add "
            "documents before encoding queries"
        )
    assert adapter.fine_dim is not None
    return QueryMap(setup.kind, setup.layer, setup.exact_source, adapter.fine_dim)


@dataclass(frozen=True)
class QueryPlan:
    """What one query pass encodes and how its vectors become the search's query vectors."""

    views: list[View]
    """The distinct views the pass encodes (it stops at the deepest one's layer)."""
    source_view: View
    """The coarse source view (Lc, hidden)."""
    query_view: View
    """The query's fine view (the documents' fine view with ``full_depth``)."""
    shallow: QueryMap | None
    """The query map of a shallow-query index (``None``: full depth)."""
    hidden: int

    @property
    def depth(self) -> int:
        """The deepest layer the pass runs."""
        return max(v.layer for v in self.views)

    @property
    def early_layer(self) -> int | None:
        """The coarse layer when the coarse source is its own vector (no map) and the pass runs
        deeper than it: the layer at which the coarse search can start; else ``None``.
        """
        as_is = self.shallow is None or self.shallow.exact_source
        layer = self.source_view.layer
        return layer if as_is and self.source_view in self.views and layer < self.depth else None

    def finish(
        self, vectors: Mapping[View, np.ndarray], *, fine: bool
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """(coarse source, fine or ``None``) from the pass's ``vectors`` (``fine=False`` with
        :attr:`early_layer` set needs only the :attr:`source_view` vectors).
        """
        if self.shallow is None:
            return vectors[self.source_view], (vectors[self.query_view] if fine else None)
        return self.shallow.apply(vectors, self.source_view, self.query_view, self.hidden, fine=fine)


def query_plan(
    adapter: EmbedderAdapter,
    config: CascadeConfig,
    query_map: QueryMap | None,
    mode: SearchMode,
    *,
    full_depth: bool = False,
) -> QueryPlan:
    """The pass of an elastic encoder's queries in ``mode`` (see :func:`encode_queries`)."""
    source_view, query_view = adapter.source_view, adapter.query_view
    assert source_view is not None and query_view is not None and adapter.fine_view is not None
    shallow = None if full_depth else _shallow_map(adapter, config, query_map)
    if shallow is None:
        fine = adapter.fine_view if full_depth else query_view
        views = [source_view] if mode is SearchMode.COARSE else [source_view, fine]
        return QueryPlan(list(dict.fromkeys(views)), source_view, fine, None, adapter.hidden)
    views = shallow.views(source_view, query_view, adapter.hidden, mode)
    return QueryPlan(list(dict.fromkeys(views)), source_view, query_view, shallow, adapter.hidden)


def encode_queries(
    adapter: EmbedderAdapter,
    config: CascadeConfig,
    query_map: QueryMap | None,
    texts: Sequence[str],
    mode: SearchMode,
    *,
    full_depth: bool = False,
) -> tuple[np.ndarray, np.ndarray | None]:
    """(coarse source, fine or ``None`` in coarse mode) query vectors from one encoder pass.

    A shallow-query index's pass stops at the query layer and the vectors go through its map;
    ``full_depth`` encodes the documents' own views instead (the full-depth reference).
    """
    if not adapter.elastic:
        if mode is SearchMode.COARSE:
            return adapter.encode_query_sources(texts), None
        return adapter.encode_queries(texts)
    plan = query_plan(adapter, config, query_map, mode, full_depth=full_depth)
    vectors = dict(zip(plan.views, adapter.encode_views(texts, plan.views), strict=True))
    return plan.finish(vectors, fine=mode is not SearchMode.COARSE)


def pass_depth(
    adapter: EmbedderAdapter | None,
    config: CascadeConfig,
    query_map: QueryMap | None,
    mode: SearchMode,
    *,
    full_depth: bool = False,
) -> int | None:
    """The deepest layer a query's encoder pass runs in ``mode`` (``None`` for plain embeddings);
    ``full_depth``: with the documents' views, i.e. also the depth of a document's pass.
    """
    if adapter is None or not adapter.elastic:
        return None
    source_view, query_view = adapter.source_view, adapter.query_view
    assert source_view is not None and query_view is not None and adapter.fine_view is not None
    setup = None if full_depth else query_setup(config, adapter)
    if setup is not None:
        shallow = query_map or QueryMap(setup.kind, setup.layer, setup.exact_source, query_view.dim)
        return max(v.layer for v in shallow.views(source_view, query_view, adapter.hidden, mode))
    if mode is SearchMode.COARSE:
        return source_view.layer
    return max(source_view.layer, (adapter.fine_view if full_depth else query_view).layer)


def check_loaded_map(
    adapter: EmbedderAdapter | None, config: CascadeConfig, query_map: QueryMap | None, where: str
) -> None:
    """Refuse an embedder whose query layer the loaded index has no query map for."""
    if adapter is None or not adapter.elastic:
        return
    setup = query_setup(config, adapter)
    if query_map is not None and (setup is None or setup.layer != query_map.layer):
        asked = "full depth" if setup is None else f"layer {setup.layer}"
        raise ModelMismatchError(
            f"{where}: the index answers queries encoded to layer {query_map.layer} ({query_map.kind.value} "
            f"query map), but the encoder's queries run to {asked}; load it with query_view at layer "
            f"{query_map.layer} (or a bare encoder), or rebuild the index"
        )
    if query_map is None and setup is not None and setup.needs_fit:
        raise ModelMismatchError(
            f"{where}: the index has no query map for queries at layer {setup.layer}; rebuild it "
            f"with query_layer={setup.layer} (esrag build --query-layer {setup.layer})"
        )
