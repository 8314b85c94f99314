"""The two stages' mechanics: fitting the coarse stage and searching a chunk of queries."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import numpy as np

from esrag.index.coarse import CoarseIndex
from esrag.index.config import CascadeConfig, SearchMode, Transform
from esrag.index.transforms import FittedTransform, fit_transform

if TYPE_CHECKING:
    from esrag.index.cascade import CascadeIndex

__all__ = ["fit_coarse", "search_rows"]

logger = logging.getLogger(__name__)


def fit_coarse(
    cfg: CascadeConfig, source: np.ndarray, fine: np.ndarray, *, same_vectors: bool
) -> tuple[FittedTransform, CoarseIndex]:
    """Fit the coarse transform on (the first ``train_size``) source vectors and train the index."""
    n, source_dim = source.shape
    sample = slice(0, cfg.train_size)
    dim = min(cfg.coarse_dim, source_dim)
    kind = cfg.transform
    if kind is Transform.ADAPTER:
        dim = min(dim, fine.shape[1])
    if kind is not Transform.PREFIX and dim == source_dim and (kind is Transform.PCA or same_vectors):
        kind = Transform.PREFIX  # a full-width rotation does not change inner products
    if kind is not Transform.PREFIX and min(n, cfg.train_size) < 2 * dim:
        logger.warning(
            "only %d documents to fit a %d-dim %s transform (need %d); using prefix instead "
            "(build on a larger corpus or call reconfigure() later)",
            n,
            dim,
            kind.value,
            2 * dim,
        )
        kind = Transform.PREFIX
    transform = fit_transform(kind, source[sample], dim, fine=fine[sample], ridge=cfg.adapter_ridge)
    coarse = CoarseIndex(dim, cfg.index_type, nprobe=cfg.nprobe, ef_search=cfg.ef_search, use_gpu=cfg.use_gpu)
    coarse.train(transform(source[sample]))
    return transform, coarse


def search_rows(
    index: CascadeIndex,
    source: np.ndarray,
    fine_q: np.ndarray | None,
    k: int,
    shortlist: int,
    candidates: np.ndarray | None,
    mode: SearchMode,
) -> tuple[np.ndarray, np.ndarray]:
    """Top-k (scores, rows) of a chunk of queries; rows -1 / scores -inf where missing.

    ``fine_q`` is only read by the ``cascade`` and ``fine`` modes (``None`` for ``coarse``).
    """
    assert index._coarse is not None and index._fine is not None and index._transform
    fine_store = index._fine
    if candidates is not None and candidates.size == 0:
        empty = np.zeros((source.shape[0], 0))
        return empty.astype(np.float32), empty.astype(np.int64)
    n_match = len(index._docs) if candidates is None else candidates.size

    def exact() -> tuple[np.ndarray, np.ndarray]:
        assert fine_q is not None
        return fine_store.topk(fine_q, k, candidates=candidates, alive=index._alive)

    if mode is SearchMode.FINE:
        return exact()
    if (
        mode is SearchMode.CASCADE
        and candidates is not None
        and n_match <= max(index.config.exact_filter_threshold, shortlist)
    ):
        return exact()
    allowed = None if candidates is None else index._id_of_row[candidates]
    coarse_q = index._transform(source)
    depth = k if mode is SearchMode.COARSE else shortlist
    c_scores, c_ids = index._coarse.search(coarse_q, depth, allowed)
    rows = np.where(c_ids >= 0, index._row_of_id[np.maximum(c_ids, 0)], -1)
    valid = rows >= 0
    if mode is SearchMode.COARSE:
        c_scores = np.where(valid, c_scores, -np.inf).astype(np.float32)
        return c_scores[:, :k], rows[:, :k]
    assert fine_q is not None
    scores = fine_store.score(fine_q, np.maximum(rows, 0))
    scores[~valid] = -np.inf
    kk = min(k, scores.shape[1])
    order = np.lexsort((rows, -scores), axis=1)[:, :kk]  # ties: lower row first
    top_s = np.take_along_axis(scores, order, axis=1)
    top_r = np.take_along_axis(rows, order, axis=1)
    short = valid.sum(axis=1) < min(k, n_match)
    if short.any():  # the coarse index missed matches (IVF probes, HNSW filters): be exact
        logger.debug("exact fallback for %d of %d queries", int(short.sum()), len(short))
        ex_s, ex_r = fine_store.topk(fine_q[short], kk, candidates=candidates, alive=index._alive)
        top_s[short], top_r[short] = ex_s[:, :kk], ex_r[:, :kk]
    return top_s, top_r
