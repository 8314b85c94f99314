"""Searching a fitted :class:`~esrag.index.state.IndexState`: coarse shortlist, exact rerank.

A search takes already-encoded, L2-normalised query vectors (the caller owns the encoder),
optionally pre-filters by metadata, and returns ids and scores best first. Modes:
``cascade`` (coarse shortlist through an ``IDSelector`` when filtered, exact fine rerank),
``coarse`` (the coarse stage's own scores) and ``fine`` (exact flat search over every fine
vector: the reference). Filters matching few documents, and queries whose shortlist came
back short (IVF probes, HNSW with a selector), are answered exactly.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import numpy as np

from esrag._arrays import l2_normalize
from esrag.index.config import SearchMode
from esrag.index.results import SearchResult
from esrag.index.state import IndexState
from esrag.validation import check_int, check_vectors, is_int

__all__ = ["check_queries", "check_search_args", "search_state"]

logger = logging.getLogger(__name__)

_QUERY_CHUNK = 256


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


def search_state(
    state: IndexState,
    source: np.ndarray,
    fine_q: np.ndarray | None,
    *,
    k: int,
    shortlist: int,
    filter: Mapping[str, Any] | None,
    mode: SearchMode,
) -> SearchResult:
    """Top-``k`` ids and scores per query (``fine_q`` is ``None`` only with ``coarse``)."""
    if len(state) == 0:
        return SearchResult([[] for _ in range(source.shape[0])], [[] for _ in source])
    candidates = None if filter is None else state.docs.matching_rows(filter, state.rows.live())
    ids: list[list[str]] = []
    out_scores: list[list[float]] = []
    for start in range(0, source.shape[0], _QUERY_CHUNK):  # bounded memory per chunk
        part = slice(start, start + _QUERY_CHUNK)
        fine_part = None if fine_q is None else fine_q[part]
        scores, rows = _search_rows(state, source[part], fine_part, k, shortlist, candidates, mode)
        for rr, ss in zip(rows.tolist(), scores.tolist(), strict=True):
            keep = [(r, s) for r, s in zip(rr, ss, strict=True) if r >= 0 and s > -np.inf]
            ids.append(state.rows.doc_ids(r for r, _ in keep))
            out_scores.append([s for _, s in keep])
    return SearchResult(ids, out_scores)


def _exact(
    state: IndexState, fine_q: np.ndarray, k: int, candidates: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray]:
    return state.fine.topk(fine_q, k, candidates=candidates, alive=state.rows.alive_mask())


def _search_rows(
    state: IndexState,
    source: np.ndarray,
    fine_q: np.ndarray | None,
    k: int,
    shortlist: int,
    candidates: np.ndarray | None,
    mode: SearchMode,
) -> tuple[np.ndarray, np.ndarray]:
    """Top-k (scores, rows) of a chunk of queries; rows -1 / scores -inf where missing."""
    if candidates is not None and candidates.size == 0:
        empty = np.zeros((source.shape[0], 0))
        return empty.astype(np.float32), empty.astype(np.int64)
    n_match = len(state) if candidates is None else candidates.size
    if mode is SearchMode.FINE:
        assert fine_q is not None
        return _exact(state, fine_q, k, candidates)
    threshold = max(state.config.exact_filter_threshold, shortlist)
    if mode is SearchMode.CASCADE and candidates is not None and n_match <= threshold:
        assert fine_q is not None
        return _exact(state, fine_q, k, candidates)
    allowed = None if candidates is None else state.rows.coarse_ids(candidates)
    depth = k if mode is SearchMode.COARSE else shortlist
    c_scores, c_ids = state.coarse.search(state.transform(source), depth, allowed)
    rows = state.rows.rows_of_coarse(c_ids)
    valid = rows >= 0
    if mode is SearchMode.COARSE:
        c_scores = np.where(valid, c_scores, -np.inf).astype(np.float32)
        return c_scores[:, :k], rows[:, :k]
    assert fine_q is not None
    return _rerank(state, fine_q, rows, valid, k, n_match, candidates)


def _rerank(
    state: IndexState,
    fine_q: np.ndarray,
    rows: np.ndarray,
    valid: np.ndarray,
    k: int,
    n_match: int,
    candidates: np.ndarray | None,
) -> tuple[np.ndarray, np.ndarray]:
    """Exact scores of the shortlisted rows, top-k; exact search for queries left short."""
    scores = state.fine.score(fine_q, np.maximum(rows, 0))
    scores[~valid] = -np.inf
    kk = min(k, scores.shape[1])
    order = np.lexsort((rows, -scores), axis=1)[:, :kk]  # ties: lower row first
    top_s = np.take_along_axis(scores, order, axis=1)
    top_r = np.take_along_axis(rows, order, axis=1)
    short = valid.sum(axis=1) < min(k, n_match)
    if short.any():  # the coarse index missed matches (IVF probes, HNSW filters): be exact
        logger.debug("exact fallback for %d of %d queries", int(short.sum()), len(short))
        ex_s, ex_r = _exact(state, fine_q[short], kk, candidates)
        top_s[short], top_r[short] = ex_s[:, :kk], ex_r[:, :kk]
    return top_s, top_r
