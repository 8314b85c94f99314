"""Held-out evaluation during training: one number per (source, view), higher is better.

Pairs: MRR@10 of each distinct anchor against all distinct positives of the held-out split
(every positive of that anchor counts as relevant). Scored pairs: Spearman correlation of
the cosine with the gold score. The run's score is the mean over sources and views.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from esrag.encoder import EspressoEncoder, View
from esrag.train.data import Examples

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
    """Mean reciprocal rank (cut at 10) of L2-normalised ``queries`` against ``docs``."""
    scores = queries @ docs.T
    total = 0.0
    for row, wanted in enumerate(relevant):
        top = np.argsort(-scores[row], kind="stable")[:10]
        rank = next((r for r, doc in enumerate(top, 1) if int(doc) in wanted), None)
        total += 1.0 / rank if rank else 0.0
    return total / max(1, len(relevant))


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
