"""Functions of the shard states of a sharded index (a sequence of
:class:`~esrag.index.state.IndexState`, shard ``i`` holding the ids that route to ``i``):
routing writes, reading across shards, refitting their shared coarse stage.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np

from esrag._arrays import l2_normalize
from esrag.index import state as st
from esrag.index.batch import DocBatch
from esrag.index.config import CascadeConfig
from esrag.index.embedder import EmbedderAdapter
from esrag.index.fit import fit_coarse
from esrag.index.rebuild import rebuild_source
from esrag.index.results import IndexedDocument
from esrag.index.shardset import shards_of
from esrag.index.state import IndexState
from esrag.validation import check_vectors

__all__ = [
    "by_shard",
    "documents",
    "fine_vectors_of",
    "live_ids",
    "refit",
    "refit_sources",
    "remove",
    "route",
    "shard_stats",
]

_ADD_CHUNK = 65_536


def by_shard(ids: Sequence[str], n_shards: int) -> dict[int, list[str]]:
    """``ids`` grouped by the shard they route to (order kept within a shard)."""
    out: dict[int, list[str]] = {}
    for doc_id, shard in zip(ids, shards_of(ids, n_shards).tolist(), strict=True):
        out.setdefault(shard, []).append(doc_id)
    return out


def route(states: Sequence[IndexState], batch: DocBatch, first_id: int) -> set[int]:
    """Upsert a checked batch into the shards its ids route to; document ``i`` gets coarse id
    ``first_id + i``. Returns the shards written.
    """
    cids = np.arange(first_id, first_id + len(batch), dtype=np.int64)
    where = shards_of(batch.ids, len(states))
    touched = set(np.unique(where).tolist())
    for shard in sorted(touched):
        pick = np.flatnonzero(where == shard)
        part = DocBatch(
            [batch.ids[i] for i in pick],
            [batch.texts[i] for i in pick],
            [batch.metadatas[i] for i in pick],
            batch.source[pick],
            batch.fine[pick],
        )
        st.insert(states[shard], part, cids[pick])
    return touched


def remove(states: Sequence[IndexState], ids: Sequence[str]) -> tuple[int, set[int]]:
    """Delete the stored ones among ``ids``; returns (how many, the shards changed)."""
    removed, touched = 0, set()
    for shard, mine in by_shard(ids, len(states)).items():
        n = st.remove(states[shard], mine)
        if n:
            touched.add(shard)
        removed += n
    return removed, touched


def live_ids(states: Sequence[IndexState]) -> list[str]:
    """Live ids of all shards in coarse-id order (the row order of one index of them)."""
    cids = np.concatenate([s.rows.coarse_ids(s.rows.live()) for s in states])
    all_ids = [doc_id for s in states for doc_id in st.live_ids(s)]
    return [all_ids[j] for j in np.argsort(cids, kind="stable").tolist()]


def documents(states: Sequence[IndexState], ids: Sequence[str]) -> list[IndexedDocument]:
    """Stored documents for ``ids``, in that order; unknown ids are skipped."""
    found = {
        doc.id: doc
        for shard, mine in by_shard(ids, len(states)).items()
        for doc in st.documents(states[shard], mine)
    }
    return [found[i] for i in ids if i in found]


def fine_vectors_of(states: Sequence[IndexState], ids: Sequence[str]) -> tuple[list[str], np.ndarray]:
    """(found ids, their fine vectors as float32 (n, fine_dim)); unknown ids are skipped."""
    found: dict[str, np.ndarray] = {}
    for shard, mine in by_shard(ids, len(states)).items():
        got, vectors = st.fine_vectors_of(states[shard], mine)
        found.update(zip(got, vectors, strict=True))
    hits = [i for i in ids if i in found]
    if not hits:
        return [], np.zeros((0, states[0].fine_dim), dtype=np.float32)
    return hits, np.stack([found[i] for i in hits])


def shard_stats(states: Sequence[IndexState]) -> dict[str, Any]:
    """:func:`esrag.index.state.state_stats` summed over the shards."""
    parts = [st.state_stats(s) for s in states]
    out = dict(parts[0])
    for name in ("documents", "rows", "tombstones", "fine_vectors"):
        out[name] = sum(p[name] for p in parts)
    out["fine_memory_mapped"] = all(p["fine_memory_mapped"] for p in parts)
    return out


def refit_sources(
    states: Sequence[IndexState],
    coarse_source: np.ndarray | None,
    adapter: EmbedderAdapter | None,
    batch_size: int,
    show_progress_bar: bool | None,
) -> list[np.ndarray]:
    """Per shard, the coarse source vectors of its live rows (row order) for :func:`refit`:
    from ``coarse_source`` (rows in :func:`live_ids` order), else as
    :func:`esrag.index.rebuild.rebuild_source` finds them (re-encoding through ``adapter``).
    """
    if coarse_source is not None:
        given = check_vectors("coarse_source", coarse_source, None, sum(len(s) for s in states))
        position = {doc_id: i for i, doc_id in enumerate(live_ids(states))}
        return [given[[position[i] for i in st.live_ids(s)]] for s in states]
    encode = None
    if adapter is not None:
        encode = lambda texts: adapter.encode_documents(texts, batch_size=batch_size)[0]  # noqa: E731
    return [
        rebuild_source(
            s,
            None,
            same_vectors=bool(adapter and adapter.same_vectors),
            encode=encode,
            batch_size=batch_size,
            show_progress_bar=show_progress_bar,
        )
        for s in states
    ]


def refit(
    states: Sequence[IndexState], config: CascadeConfig, sources: Sequence[np.ndarray], *, same_vectors: bool
) -> list[IndexState]:
    """Shard states with one coarse stage fitted on all of them and filled from ``sources``
    (per shard, its live rows' coarse source vectors in row order), like
    :func:`esrag.index.rebuild.rebuild_coarse` on one index: the fit uses the first
    ``train_size`` documents in coarse-id order.
    """
    lives = [state.rows.live() for state in states]
    sources = [l2_normalize(src) for src in sources]
    cids = np.concatenate([s.rows.coarse_ids(rows) for s, rows in zip(states, lives, strict=True)])
    owner = np.concatenate([np.full(rows.size, i) for i, rows in enumerate(lives)])
    within = np.concatenate([np.arange(rows.size) for rows in lives])
    sample = np.argsort(cids, kind="stable")[: config.train_size]
    source = np.empty((sample.size, sources[0].shape[1]), dtype=np.float32)
    fine = np.empty((sample.size, states[0].fine_dim), dtype=np.float32)
    for i, state in enumerate(states):
        pick = np.flatnonzero(owner[sample] == i)
        source[pick] = sources[i][within[sample][pick]]
        fine[pick] = state.fine.gather(lives[i][within[sample][pick]])
    transform, coarse = fit_coarse(config, source, fine, same_vectors=same_vectors)
    out = []
    for state, rows, src in zip(states, lives, sources, strict=True):
        shard_coarse = coarse.empty_copy()
        ids = state.rows.coarse_ids(rows)
        for start in range(0, rows.size, _ADD_CHUNK):
            part = slice(start, start + _ADD_CHUNK)
            shard_coarse.add(transform(src[part]), ids[part])
        out.append(dataclasses.replace(state, config=config, transform=transform, coarse=shard_coarse))
    return out
