"""Searching several shards as one index: the phases of :mod:`esrag.index.search` run on every
shard, with exact merges between them.

A single index reranks the *global* top-``shortlist`` coarse candidates, so the shards'
answers cannot simply be merged at the end: the coarse candidates of every shard are merged
to the global top ``shortlist`` (by coarse score, ties by the lower coarse id), those are
reranked exactly in their shards, and the global top ``k`` is taken (by fine score, ties by
the lower coarse id). The choice of path (exact search for small filters, the exact
fallback for queries left short) is made on the counts of all shards together. Shards share
one coarse transform and one trained quantizer (IVF probes the same lists in every shard)
and one counter of coarse ids, so with a Flat or IVF coarse stage the result is the one a
single index of the same documents gives.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

from esrag.index.config import SearchMode
from esrag.index.docstore import unknown_field_error, validate_filter
from esrag.index.results import SearchResult
from esrag.index.search import (
    QUERY_CHUNK,
    SearchPath,
    coarse_topk,
    exact_topk,
    filter_rows,
    rerank,
    search_path,
    top_by_score,
)
from esrag.index.state import IndexState

__all__ = ["MapFn", "search_shards", "shard_candidates"]

T = TypeVar("T")
MapFn = Callable[[Callable[[int], T], Iterable[int]], Iterable[T]]
"""Runs a function over the shard numbers (``ThreadPoolExecutor.map``, or plain ``map``)."""

_LAST = np.iinfo(np.int64).max


@dataclass(frozen=True)
class _Hits:
    """Merged results of a chunk of queries: (Q, m) scores, shard numbers, rows, coarse ids."""

    scores: np.ndarray
    shards: np.ndarray
    rows: np.ndarray
    cids: np.ndarray

    def take(self, order: np.ndarray) -> _Hits:
        return _Hits(
            *(np.take_along_axis(a, order, axis=1) for a in (self.scores, self.shards, self.rows, self.cids))
        )

    def best(self, depth: int) -> _Hits:
        return self.take(top_by_score(self.scores, self.cids, depth))


def shard_candidates(
    states: Sequence[IndexState], filter: Mapping[str, Any] | None
) -> list[np.ndarray | None]:
    """Per shard, the rows ``filter`` admits (``None`` each without a filter). A field no shard
    knows is an error, as in one index; a field only other shards know matches nothing here.
    """
    if filter is None:
        return [None] * len(states)
    known = set().union(*(state.docs.known_fields() for state in states))
    for field in validate_filter(filter):
        if field not in known:
            raise unknown_field_error(field, sorted(known))
    return [filter_rows(state, filter, known) for state in states]


def _merge(states: Sequence[IndexState], parts: Sequence[tuple[np.ndarray, np.ndarray]]) -> _Hits:
    """Per-shard (scores, rows) side by side, with shard numbers and coarse ids."""
    scores, shards, rows, cids = [], [], [], []
    for shard, (sc, rw) in enumerate(parts):
        valid = rw >= 0
        scores.append(np.where(valid, sc, -np.inf).astype(np.float32))
        shards.append(np.full(rw.shape, shard, dtype=np.int64))
        rows.append(rw)
        cids.append(np.where(valid, states[shard].rows.coarse_ids(np.maximum(rw, 0)), _LAST))
    return _Hits(*(np.concatenate(a, axis=1) for a in (scores, shards, rows, cids)))


def _rerank(states: Sequence[IndexState], fine_q: np.ndarray, hits: _Hits, map_fn: MapFn) -> np.ndarray:
    """Exact fine scores of the merged shortlist, each candidate scored in its own shard."""
    out = np.full(hits.rows.shape, -np.inf, dtype=np.float32)

    def one(shard: int) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        mine = (hits.shards == shard) & (hits.rows >= 0)
        width = int(mine.sum(axis=1).max(initial=0))
        if width == 0:
            return None
        order = np.argsort(~mine, axis=1, kind="stable")[:, :width]  # this shard's columns first
        valid = np.take_along_axis(mine, order, axis=1)
        rows = np.where(valid, np.take_along_axis(hits.rows, order, axis=1), -1)
        return order, valid, rerank(states[shard], fine_q, rows)

    for done in map_fn(one, range(len(states))):
        if done is not None:
            order, valid, scores = done
            current = np.take_along_axis(out, order, axis=1)
            np.put_along_axis(out, order, np.where(valid, scores, current), axis=1)
    return out


def _exact(
    states: Sequence[IndexState],
    fine_q: np.ndarray,
    k: int,
    candidates: Sequence[np.ndarray | None],
    map_fn: MapFn,
) -> _Hits:
    parts = list(map_fn(lambda s: exact_topk(states[s], fine_q, k, candidates[s]), range(len(states))))
    return _merge(states, parts).best(k)


def _chunk(
    states: Sequence[IndexState],
    source: np.ndarray,
    fine_q: np.ndarray | None,
    k: int,
    shortlist: int,
    candidates: Sequence[np.ndarray | None],
    path: SearchPath,
    n_match: int,
    map_fn: MapFn,
) -> _Hits:
    """The merged top-k of a chunk of queries along ``path``."""
    if path is SearchPath.EXACT:
        assert fine_q is not None
        return _exact(states, fine_q, k, candidates, map_fn)
    coarse_q = states[0].transform(source)  # one transform for all shards
    depth = k if path is SearchPath.COARSE else shortlist
    parts = list(map_fn(lambda s: coarse_topk(states[s], coarse_q, depth, candidates[s]), range(len(states))))
    hits = _merge(states, parts).best(depth)
    if path is SearchPath.COARSE:
        return hits
    assert fine_q is not None
    fine_scores = _rerank(states, fine_q, hits, map_fn)
    kk = min(k, hits.rows.shape[1])
    top = _Hits(fine_scores, hits.shards, hits.rows, hits.cids).best(kk)
    short = np.flatnonzero((hits.rows >= 0).sum(axis=1) < min(k, n_match))
    if short.size:  # the coarse stage missed matches (IVF probes): be exact, as one index is
        exact = _exact(states, fine_q[short], kk, candidates, map_fn)
        for name in ("scores", "shards", "rows", "cids"):
            getattr(top, name)[short] = getattr(exact, name)[:, :kk]
    return top


def search_shards(
    states: Sequence[IndexState],
    source: np.ndarray,
    fine_q: np.ndarray | None,
    *,
    k: int,
    shortlist: int,
    filter: Mapping[str, Any] | None,
    mode: SearchMode,
    map_fn: MapFn = map,
) -> SearchResult:
    """Top-``k`` ids and scores per query over all ``states`` (the shards of one index)."""
    n_queries = source.shape[0]
    total = sum(len(state) for state in states)
    if total == 0:
        return SearchResult([[] for _ in range(n_queries)], [[] for _ in range(n_queries)])
    candidates = shard_candidates(states, filter)
    filtered = filter is not None
    n_match = total if not filtered else sum(c.size for c in candidates if c is not None)
    path = search_path(mode, n_match, filtered, states[0].config.exact_filter_threshold, shortlist)
    ids: list[list[str]] = []
    scores: list[list[float]] = []
    for start in range(0, n_queries, QUERY_CHUNK):
        if path is SearchPath.NOTHING:
            ids += [[] for _ in range(min(QUERY_CHUNK, n_queries - start))]
            scores += [[] for _ in range(min(QUERY_CHUNK, n_queries - start))]
            continue
        part = slice(start, start + QUERY_CHUNK)
        fine_part = None if fine_q is None else fine_q[part]
        hits = _chunk(states, source[part], fine_part, k, shortlist, candidates, path, n_match, map_fn)
        for ss, sh, rr in zip(hits.scores.tolist(), hits.shards.tolist(), hits.rows.tolist(), strict=True):
            keep = [(s, h, r) for s, h, r in zip(ss, sh, rr, strict=True) if r >= 0 and s > -np.inf]
            ids.append([states[h].rows.doc_id(r) for _, h, r in keep])
            scores.append([s for s, _, _ in keep])
    return SearchResult(ids, scores)
