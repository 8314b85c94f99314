"""Retrieval metrics, cascade evaluation, sweeps of cascade settings and tuning."""

from __future__ import annotations

from esrag.evaluation.cascade import CascadeEvaluation, StageResult, evaluate_cascade
from esrag.evaluation.metrics import (
    DEFAULT_METRICS,
    evaluate_run,
    mrr_at_k,
    ndcg_at_k,
    parse_metric,
    recall_at_k,
)
from esrag.evaluation.plot import plot_sweep
from esrag.evaluation.sweep import SweepGrid, SweepPoint, SweepResult, pareto_front, run_sweep
from esrag.evaluation.tune import apply_recommendation, sweep_index, tune_index
from esrag.evaluation.vectors import encode_layers, sample_doc_queries

__all__ = [
    "DEFAULT_METRICS",
    "CascadeEvaluation",
    "StageResult",
    "SweepGrid",
    "SweepPoint",
    "SweepResult",
    "apply_recommendation",
    "encode_layers",
    "evaluate_cascade",
    "evaluate_run",
    "mrr_at_k",
    "ndcg_at_k",
    "pareto_front",
    "parse_metric",
    "plot_sweep",
    "recall_at_k",
    "run_sweep",
    "sample_doc_queries",
    "sweep_index",
    "tune_index",
]
