"""Searching a fitted :class:`~esrag.index.state.IndexState`: coarse shortlist, exact rerank.

A search takes already-encoded, L2-normalised query vectors (the caller owns the encoder),
optionally pre-filters by metadata, and returns ids and scores best first. Modes:
``cascade`` (coarse shortlist through an ``IDSelector`` when filtered, exact fine rerank),
``coarse`` (the coarse stage's own scores) and ``fine`` (exact flat search over every fine
vector: the reference). Filters matching few documents, and queries whose shortlist came
back short (IVF probes, HNSW with a selector), are answered exactly.

A search runs in phases, each a public function of one state, so that a sharded index
(:mod:`esrag.index.sharded_search`) runs the same phases on every shard and merges between
them: :func:`filter_rows` (the rows a filter admits), :func:`search_path` (exact, coarse or
cascade: decided on the counts of the whole index), :func:`coarse_topk` (the coarse
shortlist), :func:`rerank` (exact scores of shortlisted rows) and :func:`exact_topk` (exact
search). Ties are settled one way everywhere: equal scores rank the lower coarse id first
(in one index coarse ids increase with the row, so: the earlier stored document first),
also at the edge of a shortlist or of the top ``k``.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Mapping
from typing import Any

import numpy as np

from esrag._arrays import l2_normalize
from esrag.index.config import SearchMode
from esrag.index.early_exit import exits
from esrag.index.results import SearchResult
from esrag.index.state import IndexState
from esrag.validation import check_int, check_vectors, is_int

__all__ = [
    "QUERY_CHUNK",
    "SearchPath",
    "cascade_finish",
    "cascade_shortlist",
    "check_queries",
    "check_search_args",
    "coarse_topk",
    "exact_topk",
    "filter_rows",
    "rerank",
    "rows_result",
    "search_path",
    "search_state",
    "top_by_score",
]

logger = logging.getLogger(__name__)

QUERY_CHUNK = 256
"""Queries searched together (bounded memory per chunk)."""

_LAST = np.iinfo(np.int64).max


class SearchPath(str, enum.Enum):
    """How a (chunk of a) search is answered."""

    NOTHING = "nothing"
    """A filter that matches no document."""
    EXACT = "exact"
    """Exact flat search over the fine vectors (``fine`` mode, small filters)."""
    COARSE = "coarse"
    """The coarse stage's own top ``k``."""
    CASCADE = "cascade"
    """Coarse shortlist, exact rerank (exact search for queries left short)."""


def check_search_args(k: Any, shortlist: Any, mode: Any) -> tuple[int, int, SearchMode]:
    """``(k, shortlist, mode)`` checked: ints, ``k >= 1``, ``shortlist >= k``, a known mode."""
    for name, value in (("k", k), ("shortlist", shortlist)):
        if not is_int(value, numpy_ok=True):
            raise TypeError(f"{name} must be an int, got {value!r}")
    check_int(k, "k", minimum=1, expected=">= 1", numpy_ok=True)
    if shortlist < k:
        raise ValueError(f"shortlist ({shortlist}) must be >= k ({k})")
    try:
        mode = SearchMode(mode)
    except ValueError:
        choices = ", ".join(repr(m.value) for m in SearchMode)
        raise ValueError(f"mode must be one of {choices}, got {mode!r}") from None
    return int(k), int(shortlist), mode


def check_queries(
    coarse_source: Any, fine: Any | None, mode: SearchMode, source_dim: int | None, fine_dim: int | None
) -> tuple[np.ndarray, np.ndarray | None]:
    """Query vectors checked against the index's widths and L2-normalised; ``fine`` may be
    ``None`` only with ``mode="coarse"``.
    """
    if fine is None and mode is not SearchMode.COARSE:
        raise ValueError(
            f"fine query vectors are required with mode={mode.value!r} (only 'coarse' skips them)"
        )
    source = l2_normalize(check_vectors("query coarse_source", coarse_source, source_dim))
    if fine is None:
        return source, None
    return source, l2_normalize(check_vectors("query fine", fine, fine_dim, source.shape[0]))


def search_path(mode: SearchMode, n_match: int, filtered: bool, threshold: int, shortlist: int) -> SearchPath:
    """The path a search takes, from the counts of the whole index: ``n_match`` documents
    the filter admits (all live ones without a filter), ``threshold`` the configured
    ``exact_filter_threshold``.
    """
    if filtered and n_match == 0:
        return SearchPath.NOTHING
    if mode is SearchMode.FINE:
        return SearchPath.EXACT
    if mode is SearchMode.CASCADE and filtered and n_match <= max(threshold, shortlist):
        return SearchPath.EXACT
    return SearchPath.COARSE if mode is SearchMode.COARSE else SearchPath.CASCADE


def filter_rows(
    state: IndexState, filter: Mapping[str, Any] | None, known: set[str] | None = None
) -> np.ndarray | None:
    """The sorted live rows ``filter`` admits (``None`` without a filter).

    ``known``: the metadata fields of the whole (sharded) index; a field this state lacks
    but the index knows matches nothing here instead of being an unknown field.
    """
    if filter is None:
        return None
    if known is not None and not set(filter) <= set(state.docs.known_fields()):
        return np.zeros(0, dtype=np.int64)
    return state.docs.matching_rows(filter, state.rows.live())


def top_by_score(scores: np.ndarray, keys: np.ndarray, depth: int) -> np.ndarray:
    """Column order of the best ``depth`` entries per row: higher score first, then lower key."""
    return np.lexsort((keys, -scores), axis=1)[:, :depth]


def exact_topk(
    state: IndexState, fine_q: np.ndarray, k: int, candidates: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-``k`` (scores, rows) over ``candidates`` rows (default: every live row)."""
    return state.fine.topk(fine_q, k, candidates=candidates, alive=state.rows.alive_mask())


def coarse_topk(
    state: IndexState, coarse_q: np.ndarray, depth: int, candidates: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray]:
    """The coarse stage's top-``depth`` (scores, rows) of transformed queries, best first;
    rows -1 and scores -inf where missing. A tie at the ``depth``-th place is settled by the
    lower coarse id (more candidates are fetched until the tie is inside the answer).
    """
    allowed = None if candidates is None else state.rows.coarse_ids(candidates)
    cap = max(state.coarse.ntotal, 1)
    scores, rows = _fetch(state, coarse_q, min(depth + 1, cap), allowed)
    if scores.shape[1] > depth:  # fetched one more than asked: is the edge tied?
        edge = scores[:, depth - 1].copy()
        tied = np.flatnonzero(np.isfinite(edge) & (scores[:, depth] == edge))
        fetch = scores.shape[1]
        while tied.size and fetch < cap:
            fetch = min(2 * fetch, cap)
            more_s, more_r = _fetch(state, coarse_q[tied], fetch, allowed)
            sub = top_by_score(more_s, _keys(state, more_r), depth)
            scores[tied, :depth] = np.take_along_axis(more_s, sub, axis=1)
            rows[tied, :depth] = np.take_along_axis(more_r, sub, axis=1)
            last = more_s[:, -1]
            tied = tied[np.isfinite(last) & (last == edge[tied])]
        scores, rows = scores[:, :depth], rows[:, :depth]
    return scores, rows


def _keys(state: IndexState, rows: np.ndarray) -> np.ndarray:
    """Coarse ids of rows (the tie key); missing rows (-1) sort last."""
    return np.where(rows >= 0, state.rows.coarse_ids(np.maximum(rows, 0)), _LAST)


def _fetch(
    state: IndexState, coarse_q: np.ndarray, depth: int, allowed: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray]:
    """``depth`` coarse results per query ordered by (score, coarse id); rows -1 where missing."""
    c_scores, c_ids = state.coarse.search(coarse_q, depth, allowed)
    rows = state.rows.rows_of_coarse(c_ids)
    c_scores = np.where(rows >= 0, c_scores, -np.inf).astype(np.float32)
    order = top_by_score(c_scores, _keys(state, rows), c_scores.shape[1])
    return np.take_along_axis(c_scores, order, axis=1), np.take_along_axis(rows, order, axis=1)


def rerank(state: IndexState, fine_q: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Exact scores of query ``i`` against ``rows[i, j]``; -inf where the row is -1."""
    scores = state.fine.score(fine_q, np.maximum(rows, 0))
    scores[rows < 0] = -np.inf
    return scores


def search_state(
    state: IndexState,
    source: np.ndarray,
    fine_q: np.ndarray | None,
    *,
    k: int,
    shortlist: int,
    filter: Mapping[str, Any] | None,
    mode: SearchMode,
    exit_margin: float | None = None,
) -> SearchResult:
    """Top-``k`` ids and scores per query (``fine_q`` is ``None`` only with ``coarse``);
    ``exit_margin``: early exit of decisive cascade queries (:mod:`esrag.index.early_exit`).
    """
    if len(state) == 0:
        return SearchResult([[] for _ in range(source.shape[0])], [[] for _ in source])
    candidates = filter_rows(state, filter)
    n_match = len(state) if candidates is None else candidates.size
    path = search_path(mode, n_match, candidates is not None, state.config.exact_filter_threshold, shortlist)
    parts: list[tuple[np.ndarray, np.ndarray]] = []
    exited: list[np.ndarray] = []
    for start in range(0, source.shape[0], QUERY_CHUNK):  # bounded memory per chunk
        part = slice(start, start + QUERY_CHUNK)
        fine_part = None if fine_q is None else fine_q[part]
        if path is SearchPath.CASCADE and exit_margin is not None:
            c_scores, c_rows = cascade_shortlist(state, source[part], shortlist, candidates)
            gone = exits(c_scores, exit_margin)
            assert fine_part is not None
            parts.append(cascade_finish(state, fine_part, (c_scores, c_rows), k, candidates, gone))
            exited.append(gone)
        else:
            parts.append(_search_rows(state, source[part], fine_part, k, shortlist, candidates, path))
    result = rows_result(state, parts)
    if exit_margin is None:
        return result
    flags = np.concatenate(exited).tolist() if exited else [False] * source.shape[0]
    return SearchResult(result.ids, result.scores, exited=[bool(f) for f in flags])


def rows_result(state: IndexState, parts: list[tuple[np.ndarray, np.ndarray]]) -> SearchResult:
    """The ids and scores of (scores, rows) parts (rows -1 / scores -inf dropped), in order."""
    ids: list[list[str]] = []
    out_scores: list[list[float]] = []
    for scores, rows in parts:
        for rr, ss in zip(rows.tolist(), scores.tolist(), strict=True):
            keep = [(r, s) for r, s in zip(rr, ss, strict=True) if r >= 0 and s > -np.inf]
            ids.append(state.rows.doc_ids(r for r, _ in keep))
            out_scores.append([s for _, s in keep])
    return SearchResult(ids, out_scores)


def cascade_shortlist(
    state: IndexState, source: np.ndarray, shortlist: int, candidates: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray]:
    """The cascade's first phase: coarse (scores, rows) of the top ``shortlist`` of checked,
    normalised coarse source query vectors (transformed here).
    """
    return coarse_topk(state, state.transform(source), shortlist, candidates)


def cascade_finish(
    state: IndexState,
    fine_q: np.ndarray | None,
    coarse: tuple[np.ndarray, np.ndarray],
    k: int,
    candidates: np.ndarray | None,
    exited: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The cascade's second phase: top-``k`` (scores, rows) from the coarse ``(scores, rows)``
    shortlist: exact rerank, exact search for queries left short; ``exited`` queries (bool
    mask) keep the shortlist's first ``k`` with their coarse scores (their ``fine_q`` rows
    are not read; ``fine_q`` may be ``None`` when every query exited).
    """
    c_scores, rows = coarse
    kk = min(k, rows.shape[1])
    if exited is None:
        exited = np.zeros(rows.shape[0], dtype=bool)
    top_s = np.array(c_scores[:, :kk], dtype=np.float32)
    top_r = np.array(rows[:, :kk])
    stay = np.flatnonzero(~exited)
    if stay.size == 0:
        return top_s, top_r
    assert fine_q is not None
    every = stay.size == rows.shape[0]
    stay_q, stay_rows = (fine_q, rows) if every else (fine_q[stay], rows[stay])
    scores = rerank(state, stay_q, stay_rows)
    order = top_by_score(scores, _keys(state, stay_rows), kk)
    top_s[stay] = np.take_along_axis(scores, order, axis=1)
    top_r[stay] = np.take_along_axis(stay_rows, order, axis=1)
    n_match = len(state) if candidates is None else candidates.size
    short = stay[(rows[stay] >= 0).sum(axis=1) < min(k, n_match)]
    if short.size:  # the coarse index missed matches (IVF probes, HNSW filters): be exact
        logger.debug("exact fallback for %d of %d queries", int(short.size), len(stay))
        ex_s, ex_r = exact_topk(state, fine_q[short], kk, candidates)
        top_s[short], top_r[short] = ex_s[:, :kk], ex_r[:, :kk]
    return top_s, top_r


def _search_rows(
    state: IndexState,
    source: np.ndarray,
    fine_q: np.ndarray | None,
    k: int,
    shortlist: int,
    candidates: np.ndarray | None,
    path: SearchPath,
) -> tuple[np.ndarray, np.ndarray]:
    """Top-k (scores, rows) of a chunk of queries; rows -1 / scores -inf where missing."""
    if path is SearchPath.NOTHING:
        empty = np.zeros((source.shape[0], 0))
        return empty.astype(np.float32), empty.astype(np.int64)
    if path is SearchPath.EXACT:
        assert fine_q is not None
        return exact_topk(state, fine_q, k, candidates)
    if path is SearchPath.COARSE:
        return coarse_topk(state, state.transform(source), k, candidates)
    assert fine_q is not None
    return cascade_finish(
        state, fine_q, cascade_shortlist(state, source, shortlist, candidates), k, candidates
    )
