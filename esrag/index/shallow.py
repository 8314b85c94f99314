"""Shallow-first ingest: searchable after a pass to the coarse layer, fine vectors filled in later.

A shallow-first build (``CascadeIndex.build(..., shallow_first=True)``, ``esrag build
--shallow-first``) runs every document's encoder pass only to the coarse layer, fits the
coarse stage exactly as a full build would (the transform and the FAISS index depend on the
coarse source vectors alone) and stores the documents: a *coarse-only* state whose fine store
is empty. The fill-in (:func:`encode_fine` then :func:`append_fine`, in row order, chunk by
chunk: ``CascadeIndex.fill_fine``) re-encodes the stored texts to the fine layer. Until the
last row has its fine vector, searches run in coarse mode (a cascade would rerank a shortlist
of which only some rows have fine vectors, so its results would depend on how far the fill-in
got) and writes are refused; then the index is an ordinary one, identical to a full build of
the same corpus with the same batch size.

What it needs: an ESE encoder whose coarse layer is below the fine layer (otherwise the first
pass is already the full pass), a transform that is fitted without fine vectors (``prefix`` or
``pca``: ``adapter`` maps to the fine vectors) and full-depth queries (a ridge query map is
fitted on the fine vectors).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from esrag._arrays import l2_normalize
from esrag._progress import progress
from esrag.index.config import CascadeConfig, Transform
from esrag.index.docstore import DocStore
from esrag.index.embedder import EmbedderAdapter
from esrag.index.fine import FineStore
from esrag.index.fit import fit_coarse
from esrag.index.query import query_setup
from esrag.index.rows import RowMap
from esrag.index.state import IndexState
from esrag.validation import check_vectors

__all__ = ["append_fine", "build_coarse_only", "check_shallow_first", "encode_fine", "fill_chunks"]


def check_shallow_first(adapter: EmbedderAdapter | None, config: CascadeConfig) -> None:
    """Refuse, naming the setting, what a shallow-first build cannot do (see the module docstring)."""
    if adapter is None or not adapter.elastic:
        raise ValueError("shallow_first needs an esrag EspressoEncoder (a plain Embeddings has one depth)")
    assert adapter.source_view is not None and adapter.fine_view is not None
    coarse, fine = adapter.source_view.layer, adapter.fine_view.layer
    if coarse >= fine:
        raise ValueError(
            f"shallow_first needs a coarse layer below the fine layer: the coarse layer {coarse} is not "
            f"below the fine layer {fine}, so its first pass would cost a full build; set "
            "CascadeConfig.coarse_layer (esrag build --coarse 2:64)"
        )
    if config.transform is Transform.ADAPTER:
        raise ValueError(
            "shallow_first cannot fit the 'adapter' transform (a map to the fine vectors, which the "
            "first pass does not compute): use transform='pca' or 'prefix'"
        )
    if query_setup(config, adapter) is not None:
        raise ValueError(
            f"shallow_first does not support shallow queries (query_layer {config.query_layer}): "
            "their query map is fitted on the fine vectors; build without one of the two"
        )


def _source_batches(
    adapter: EmbedderAdapter, texts: Sequence[str], batch_size: int, show_progress_bar: bool | None
) -> Iterator[np.ndarray]:
    """The coarse source vectors of ``texts``, one array per ``batch_size`` slice (the pass stops
    at the coarse layer), checked and L2-normalised as a full build's are.
    """
    assert adapter.source_view is not None
    bar = progress(total=len(texts), desc="Coarse pass", show=show_progress_bar, unit="doc")
    try:
        for start in range(0, len(texts), batch_size):
            part = list(texts[start : start + batch_size])
            (source,) = adapter.encode_views(part, [adapter.source_view], batch_size)
            yield l2_normalize(check_vectors("coarse_source", source, adapter.source_dim, len(part)))
            bar.update(len(part))
    finally:
        bar.close()


def _fitted(config: CascadeConfig, fine_dim: int, pending: list[np.ndarray]) -> IndexState:
    """An empty coarse-only state whose coarse stage is fitted on ``pending`` as a full build's is."""
    sample = np.concatenate(pending)[: config.train_size]
    no_fine = np.broadcast_to(np.zeros((1, fine_dim), np.float32), (len(sample), fine_dim))
    transform, coarse = fit_coarse(config, sample, no_fine, same_vectors=False)
    return IndexState(config, transform, coarse, FineStore(fine_dim, config.fine_dtype), DocStore(), RowMap())


def build_coarse_only(
    adapter: EmbedderAdapter,
    config: CascadeConfig,
    docs: tuple[list[str], list[str], list[dict[str, Any]]],
    batch_size: int,
    show_progress_bar: bool | None,
) -> IndexState:
    """A coarse-only state of checked ``(ids, texts, metadatas)`` (see the module docstring); the
    coarse stage is fitted on the first ``train_size`` documents, the rest are added as they come.
    """
    check_shallow_first(adapter, config)
    assert adapter.fine_dim is not None
    ids, texts, metadatas = docs
    state: IndexState | None = None
    pending: list[np.ndarray] = []
    start = 0
    for source in _source_batches(adapter, texts, batch_size, show_progress_bar):
        pending.append(source)
        last = start + sum(map(len, pending)) >= len(texts)
        if state is None and not last and sum(map(len, pending)) < config.train_size:
            continue
        state = state or _fitted(config, adapter.fine_dim, pending)
        for batch in pending:
            stop = start + len(batch)
            first = state.rows.next_coarse_id
            coarse_ids = np.arange(first, first + len(batch), dtype=np.int64)
            state.coarse.add(state.transform(batch), coarse_ids)
            state.rows.add(ids[start:stop], coarse_ids)
            for text, meta in zip(texts[start:stop], metadatas[start:stop], strict=True):
                state.docs.append(text, meta)
            start = stop
        pending = []
    assert state is not None
    return state


def fill_chunks(filled: int, total: int, chunk_size: int, batch_size: int) -> list[tuple[int, int]]:
    """The ``(start, stop)`` row ranges still to fill, ``chunk_size`` rounded up to whole batches
    (so that every encoder call sees the documents a full build's call saw).
    """
    step = -(-chunk_size // batch_size) * batch_size
    return [(s, min(s + step, total)) for s in range(filled, total, step)]


def encode_fine(
    adapter: EmbedderAdapter, state: IndexState, start: int, stop: int, batch_size: int
) -> np.ndarray:
    """The fine vectors of rows ``start:stop`` from their stored texts (one encoder call per
    ``batch_size`` rows from ``start``), checked and L2-normalised as a full build's are.
    """
    assert adapter.fine_view is not None
    out = []
    for first in range(start, stop, batch_size):
        rows = range(first, min(first + batch_size, stop))
        texts = [state.docs.text(row) for row in rows]
        (fine,) = adapter.encode_views(texts, [adapter.fine_view], batch_size)
        out.append(l2_normalize(check_vectors("fine", fine, state.fine_dim, len(texts))))
    return np.concatenate(out) if out else np.zeros((0, state.fine_dim), np.float32)


def append_fine(state: IndexState, start: int, vectors: np.ndarray) -> None:
    """Store the fine vectors of rows ``start:start + len(vectors)`` (the next rows to fill)."""
    if len(state.fine) != start or start + len(vectors) > state.rows.num_rows:
        raise RuntimeError(
            f"fine vectors for rows {start}..{start + len(vectors) - 1} do not continue the fill-in "
            f"({state.mode_line()})"
        )
    state.fine.append(vectors)
