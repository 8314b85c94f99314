"""Held-out evaluation during training: one number per (source, view), higher is better.

Pairs: MRR@10 of each distinct anchor against all distinct positives of the held-out split
(every positive of that anchor counts as relevant). Scored pairs: Spearman correlation of
the cosine with the gold score. The run's score is the mean over sources and views.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from esrag.encoder import EspressoEncoder, View
from esrag.evaluation.metrics import mrr_at_k
from esrag.train.examples import Examples

__all__ = ["evaluate_examples", "mrr_at_10", "spearman"]


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman's rho with average ranks for ties (as scipy.stats.spearmanr)."""
    rx, ry = _ranks(np.asarray(x, dtype=np.float64)), _ranks(np.asarray(y, dtype=np.float64))
    rx, ry = rx - rx.mean(), ry - ry.mean()
    denominator = float(np.sqrt((rx**2).sum() * (ry**2).sum()))
    return float((rx * ry).sum() / denominator) if denominator > 0 else 0.0


def _ranks(values: np.ndarray) -> np.ndarray:
    unique, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    average = starts + (counts - 1) / 2.0
    del unique
    return average[inverse]


def mrr_at_10(queries: np.ndarray, docs: np.ndarray, relevant: list[set[int]]) -> float:
    """Mean reciprocal rank (cut at 10) of L2-normalised ``queries`` against ``docs``.

    Ranks by cosine (ties: lower document index first), then scores with
    :func:`esrag.evaluation.metrics.mrr_at_k`, so the metric is implemented once; like it,
    queries without any relevant document are left out of the mean.
    """
    scores = queries @ docs.T
    run: dict[str, list[str]] = {}
    qrels: dict[str, dict[str, int]] = {}
    for row, wanted in enumerate(relevant):
        top = np.argsort(-scores[row], kind="stable")[:10]
        run[str(row)] = [str(int(doc)) for doc in top]
        qrels[str(row)] = {str(doc): 1 for doc in wanted}
    return mrr_at_k(run, qrels, 10)


def evaluate_examples(
    encoder: EspressoEncoder,
    examples: Sequence[Examples],
    views: Sequence[View],
    *,
    batch_size: int = 32,
) -> dict[str, float]:
    """``{"score": mean, "<source> @ <view>": value, ...}``; the model must be in eval mode."""
    results: dict[str, float] = {}
    for ex in examples:
        if ex.scored:
            left = encoder.encode(ex.anchors, views, batch_size=batch_size)
            right = encoder.encode(ex.positives, views, batch_size=batch_size)
            gold = np.asarray(ex.scores, dtype=np.float64)
            for view, a, b in zip(views, left, right, strict=True):
                results[f"{ex.source} @ {view} spearman"] = spearman((a * b).sum(axis=1), gold)
            continue
        anchors = sorted(set(ex.anchors))
        docs = sorted(set(ex.positives))
        anchor_index = {text: i for i, text in enumerate(anchors)}
        doc_index = {text: i for i, text in enumerate(docs)}
        relevant: list[set[int]] = [set() for _ in anchors]
        for anchor, positive in zip(ex.anchors, ex.positives, strict=True):
            relevant[anchor_index[anchor]].add(doc_index[positive])
        queries = encoder.encode(anchors, views, batch_size=batch_size)
        targets = encoder.encode(docs, views, batch_size=batch_size)
        for view, q, d in zip(views, queries, targets, strict=True):
            results[f"{ex.source} @ {view} mrr@10"] = mrr_at_10(q, d, relevant)
    results["score"] = float(np.mean(list(results.values()))) if results else float("nan")
    return results
