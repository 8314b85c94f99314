"""Retrieval metrics, cascade evaluation and setting sweeps."""

from __future__ import annotations

from esrag.evaluation.metrics import (
    DEFAULT_METRICS,
    evaluate_run,
    mrr_at_k,
    ndcg_at_k,
    parse_metric,
    recall_at_k,
)

__all__ = [
    "DEFAULT_METRICS",
    "evaluate_run",
    "mrr_at_k",
    "ndcg_at_k",
    "parse_metric",
    "recall_at_k",
]
