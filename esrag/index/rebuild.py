"""Rebuilding the coarse stage of a state with new settings (``reconfigure``, ``esrag tune``).

The fine store, the doc store and the row map are kept; a new transform and coarse index
are fitted on the live documents' coarse source vectors and a new state is returned.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np

from esrag._arrays import l2_normalize
from esrag._progress import progress
from esrag.index.config import CascadeConfig
from esrag.index.embedder import EmbedderAdapter
from esrag.index.fit import fit_coarse
from esrag.index.state import IndexState
from esrag.validation import check_vectors

__all__ = ["LIGHT_SETTINGS", "rebuild", "rebuild_coarse", "rebuild_source", "retune"]

LIGHT_SETTINGS = frozenset({"shortlist", "nprobe", "ef_search"})
"""Settings that change how the coarse stage is searched, not what it holds."""

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


def rebuild(
    state: IndexState,
    config: CascadeConfig,
    adapter: EmbedderAdapter | None,
    coarse_source: np.ndarray | None,
    batch_size: int,
    show_progress_bar: bool | None,
) -> IndexState:
    """:func:`rebuild_source` then :func:`rebuild_coarse`, re-encoding through ``adapter``."""
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
    return rebuild_coarse(state, config, source, same_vectors=same)
