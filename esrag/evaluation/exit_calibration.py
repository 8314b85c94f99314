"""Calibrate the early-exit margin of a cascade setting for a target retention.

For one cascade setting the sweep has, per query, the coarse shortlist's margin
(:func:`esrag.index.early_exit.coarse_margins`), the quality of the cascade's answer and the
quality of the coarse shortlist's own top ``k`` (what an exited query returns). A margin
``m`` exits the queries whose margin is at least ``m``; the mixed run's quality is the mean
of the exited queries' coarse quality and the others' cascade quality, and its cost the
exit-rate-weighted mix of the coarse cost (pass to the coarse layer + coarse search) and the
full cascade cost. :func:`exit_points` returns the calibrated margin (the highest exit rate
whose mixed retention still reaches the target) and points at fixed exit rates for the
Pareto front.

The calibration is in-sample: the margin is chosen on the very queries it is scored on.
Calibrate on training queries and check on held-out ones before trusting a figure.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from esrag.evaluation.metrics import Qrels, mrr_at_k, ndcg_at_k, parse_metric, recall_at_k

__all__ = ["EXIT_RATES", "ExitPoint", "exit_points", "per_query_quality"]

EXIT_RATES = (0.1, 0.25, 0.5, 0.75)
"""Exit rates (shares of the queries) whose margins the sweep also reports."""

_METRICS = {"ndcg": ndcg_at_k, "recall": recall_at_k, "mrr": mrr_at_k}


@dataclass(frozen=True)
class ExitPoint:
    """One early-exit margin of a setting: the queries it exits and what the mixed run keeps."""

    margin: float
    exit_rate: float
    """Share of all queries that exit."""
    quality: float
    """Mean quality over the judged queries of the mixed run."""
    calibrated: bool
    """Whether this is the margin calibrated for the target."""


def per_query_quality(
    run: Mapping[str, list[str]], judged: Qrels, metric: str, qids: Sequence[str]
) -> np.ndarray:
    """``metric`` of each of ``qids`` in ``run`` (``NaN`` for a query without judgments)."""
    name, k = parse_metric(metric)
    values = _METRICS[name](dict(run), judged, k, per_query=True)
    return np.array([values.get(q, math.nan) for q in qids], dtype=np.float64)


def exit_points(
    margins: np.ndarray,
    cascade: np.ndarray,
    coarse: np.ndarray,
    *,
    reference: float,
    target: float,
    rates: Sequence[float] = EXIT_RATES,
) -> list[ExitPoint]:
    """The calibrated margin (first, when any margin that exits a query reaches ``target``
    retention of ``reference``) and one margin per exit rate in ``rates``.

    ``margins``, ``cascade``, ``coarse``: per query (aligned), the coarse margin, the quality of
    the cascade's answer and of the coarse answer (``NaN``: unjudged, counts for the exit rate
    only).
    """
    margins = np.asarray(margins, dtype=np.float64)
    judged = ~np.isnan(cascade)
    n = margins.size
    if n == 0 or not judged.any():
        return []

    def point(margin: float, calibrated: bool) -> ExitPoint:
        gone = margins >= margin
        mixed = np.where(gone, coarse, cascade)[judged]
        return ExitPoint(float(margin), float(gone.mean()), float(mixed.mean()), calibrated)

    out: list[ExitPoint] = []
    candidates = [point(m, True) for m in np.unique(margins)[::-1]]  # fewest exits first
    keep = [p for p in candidates if reference > 0 and p.quality / reference >= target]
    if keep:
        out.append(max(keep, key=lambda p: (p.exit_rate, -p.margin)))
    ordered = np.sort(margins)[::-1]
    for rate in rates:
        margin = float(ordered[min(n - 1, max(0, math.ceil(rate * n) - 1))])
        if not any(p.margin == margin for p in out):
            out.append(point(margin, False))
    return out
