"""Rebuilding the coarse stage of a state with new settings (``reconfigure``, ``esrag tune``).

The fine store, the doc store and the row map are kept; a new transform and coarse index
are fitted on the live documents' coarse source vectors and a new state is returned. The
shallow-query map (:mod:`esrag.index.query`) is refitted with it, or alone when only the query
settings change.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np

from esrag._arrays import l2_normalize
from esrag._progress import progress
from esrag.encoder.views import View
from esrag.index.batch import DocBatch
from esrag.index.config import CascadeConfig
from esrag.index.embedder import EmbedderAdapter
from esrag.index.fit import fit_coarse
from esrag.index.query import QueryMap, fit_query_map
from esrag.index.query_pass import fit_query_vectors, resolved_config
from esrag.index.state import IndexState, new_state
from esrag.validation import check_vectors

__all__ = [
    "LIGHT_SETTINGS",
    "QUERY_SETTINGS",
    "initial_state",
    "rebuild",
    "rebuild_coarse",
    "rebuild_source",
    "reconfigured",
    "refit_query_map",
    "retune",
]

LIGHT_SETTINGS = frozenset({"shortlist", "nprobe", "ef_search", "exit_margin", "progressive"})
"""Settings that change how the coarse stage is searched, not what it holds."""
QUERY_SETTINGS = frozenset({"query_layer", "query_map"})
"""Settings of the shallow-query map only (the coarse stage is kept)."""

_ADD_CHUNK = 65_536

Encode = Callable[[list[str]], np.ndarray]


def retune(state: IndexState, config: CascadeConfig) -> IndexState:
    """The state with ``config``'s search-time settings (``LIGHT_SETTINGS``) applied."""
    state.coarse.nprobe, state.coarse.ef_search = config.nprobe, config.ef_search
    return dataclasses.replace(state, config=config)


def rebuild_source(
    state: IndexState,
    coarse_source: np.ndarray | None,
    *,
    same_vectors: bool,
    encode: Encode | None,
    batch_size: int,
    show_progress_bar: bool | None,
) -> np.ndarray:
    """Coarse source vectors of the live rows (in row order) for a rebuild.

    From ``coarse_source`` when given; else the stored fine vectors when they are the same
    view; else by re-encoding the stored texts with ``encode`` (batches of ``batch_size``).
    """
    rows = state.rows.live()
    if coarse_source is not None:
        return check_vectors("coarse_source", coarse_source, None, rows.size)
    if encode is None:
        raise ValueError(
            "this index has no embedder to re-encode its texts: pass coarse_source= "
            "(coarse source vectors in ids() order)"
        )
    if same_vectors:
        return state.fine.gather(rows)
    texts = state.docs.texts(rows)
    parts = []
    for start in progress(range(0, len(texts), batch_size), desc="Re-encoding", show=show_progress_bar):
        parts.append(encode(texts[start : start + batch_size]))
    return np.concatenate(parts)


def rebuild_coarse(
    state: IndexState, config: CascadeConfig, source: np.ndarray, *, same_vectors: bool
) -> IndexState:
    """A state with a coarse stage fitted and filled from ``source`` (live rows, row order)."""
    rows = state.rows.live()
    source = l2_normalize(check_vectors("coarse_source", source, None, rows.size))
    fine = state.fine.gather(rows[: config.train_size])
    transform, coarse = fit_coarse(config, source, fine, same_vectors=same_vectors)
    coarse_ids = state.rows.coarse_ids(rows)
    for start in range(0, rows.size, _ADD_CHUNK):
        part = slice(start, start + _ADD_CHUNK)
        coarse.add(transform(source[part]), coarse_ids[part])
    return dataclasses.replace(state, config=config, transform=transform, coarse=coarse)


def refit_query_map(
    state: IndexState,
    config: CascadeConfig,
    adapter: EmbedderAdapter | None,
    *,
    source: np.ndarray | None,
    query_source: np.ndarray | None,
    batch_size: int = 64,
) -> IndexState:
    """``state`` with ``config`` (resolved for shallow queries) and its query map refitted.

    A ridge map is fitted on the first ``train_size`` live rows: their query-layer vectors
    from ``query_source`` (live rows in row order) or re-encoded from the stored texts, their
    coarse source vectors from ``source`` (same rows) or re-encoded in that same pass.
    """
    config, setup = resolved_config(config, adapter)
    if setup is None:
        return dataclasses.replace(state, config=config, query_map=None)
    rows = state.rows.live()
    fine = state.fine.gather(rows[: config.train_size])
    if not setup.needs_fit:
        qmap = QueryMap(setup.kind, setup.layer, setup.exact_source, fine.shape[1])
        return dataclasses.replace(state, config=config, query_map=qmap)
    n = fine.shape[0]
    shallow = (
        None if query_source is None else check_vectors("query_source", query_source, None, rows.size)[:n]
    )
    if (shallow is None or (source is None and not setup.exact_source)) and adapter is not None:
        assert adapter.source_view is not None
        texts = state.docs.texts(rows[:n])
        views = [View(setup.layer, adapter.hidden), adapter.source_view]
        parts = [
            adapter.encode_views(texts[i : i + batch_size], views, batch_size)
            for i in range(0, n, batch_size)
        ]
        shallow = l2_normalize(np.concatenate([p[0] for p in parts])) if shallow is None else shallow
        source = np.concatenate([p[1] for p in parts]) if source is None else source
    if not setup.exact_source and source is None:
        raise ValueError("this index has no embedder to re-encode its texts: pass coarse_source= as well")
    target = l2_normalize(source[:n]) if source is not None else fine
    qmap = fit_query_map(setup, shallow, target, fine, ridge=config.adapter_ridge)
    return dataclasses.replace(state, config=config, query_map=qmap)


def rebuild(
    state: IndexState,
    config: CascadeConfig,
    adapter: EmbedderAdapter | None,
    coarse_source: np.ndarray | None,
    batch_size: int,
    show_progress_bar: bool | None,
    query_source: np.ndarray | None = None,
) -> IndexState:
    """:func:`rebuild_source`, :func:`rebuild_coarse` and :func:`refit_query_map`, re-encoding
    through ``adapter``.
    """
    same = bool(adapter and adapter.same_vectors)
    encode = None
    if adapter is not None:
        encode = lambda texts: adapter.encode_documents(texts, batch_size=batch_size)[0]  # noqa: E731
    source = rebuild_source(
        state,
        coarse_source,
        same_vectors=same,
        encode=encode,
        batch_size=batch_size,
        show_progress_bar=show_progress_bar,
    )
    rebuilt = rebuild_coarse(state, config, source, same_vectors=same)
    return refit_query_map(
        rebuilt, config, adapter, source=source, query_source=query_source, batch_size=batch_size
    )


def initial_state(
    config: CascadeConfig, adapter: EmbedderAdapter | None, pending: list[DocBatch]
) -> IndexState:
    """The first state of an index: its coarse stage (and shallow-query map) fitted on ``pending``."""
    config, setup = resolved_config(config, adapter)
    if setup is not None and setup.needs_fit:
        pending = fit_query_vectors(adapter, pending, 64)
    return new_state(config, pending, same_vectors=bool(adapter and adapter.same_vectors), query=setup)


def reconfigured(
    state: IndexState,
    config: CascadeConfig,
    changes: set[str],
    adapter: EmbedderAdapter | None,
    sources: tuple[np.ndarray | None, np.ndarray | None],
    batch_size: int,
    show_progress_bar: bool | None,
) -> IndexState:
    """``state`` with ``config`` applied (the ``changes`` named): search settings are retuned,
    query settings refit the query map alone, anything else rebuilds the coarse stage.
    ``sources``: the ``(coarse_source, query_source)`` vectors given to ``reconfigure``.
    """
    coarse_source, query_source = sources
    if changes <= LIGHT_SETTINGS | QUERY_SETTINGS and coarse_source is None:
        state = retune(state, config)
        if changes & QUERY_SETTINGS or query_source is not None:
            state = refit_query_map(state, config, adapter, source=None, query_source=query_source)
        return state
    return rebuild(state, config, adapter, coarse_source, batch_size, show_progress_bar, query_source)
