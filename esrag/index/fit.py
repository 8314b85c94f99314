"""Fitting the coarse stage: choose and fit the transform, train the FAISS index on it."""

from __future__ import annotations

import logging

import numpy as np

from esrag.index.coarse import CoarseIndex
from esrag.index.config import CascadeConfig, Transform
from esrag.index.transforms import FittedTransform, fit_transform

__all__ = ["fit_coarse"]

logger = logging.getLogger(__name__)


def _transform_kind(
    cfg: CascadeConfig, n: int, source_dim: int, fine_dim: int, same_vectors: bool
) -> tuple[Transform, int]:
    """The transform actually fitted and its dimension (the configured one may not apply)."""
    dim = min(cfg.coarse_dim, source_dim)
    kind = cfg.transform
    if kind is Transform.ADAPTER:
        dim = min(dim, fine_dim)
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
    return kind, dim


def fit_coarse(
    cfg: CascadeConfig, source: np.ndarray, fine: np.ndarray, *, same_vectors: bool
) -> tuple[FittedTransform, CoarseIndex]:
    """Fit the coarse transform on (the first ``train_size``) source vectors and train the index.

    ``source``/``fine``: L2-normalised (n, source_dim) coarse source and (n, fine_dim) fine
    vectors of the same documents; ``same_vectors``: whether they are the same view.
    """
    n, source_dim = source.shape
    sample = slice(0, cfg.train_size)
    kind, dim = _transform_kind(cfg, n, source_dim, fine.shape[1], same_vectors)
    transform = fit_transform(kind, source[sample], dim, fine=fine[sample], ridge=cfg.adapter_ridge)
    coarse = CoarseIndex(dim, cfg.index_type, nprobe=cfg.nprobe, ef_search=cfg.ef_search, use_gpu=cfg.use_gpu)
    coarse.train(transform(source[sample]))
    return transform, coarse
