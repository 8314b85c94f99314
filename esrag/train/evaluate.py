"""Held-out evaluation during training: one number per (source, view), higher is better.

:func:`score_slices` is what the trainer selects checkpoints with: nDCG@10 of held-out
queries ranked against their source's documents (:class:`~esrag.train.holdout.RetrievalSlice`,
the metric of ``esrag eval``, :mod:`esrag.evaluation.metrics`) and Spearman of the cosine for
held-out scored pairs, per view, with the full view's per-item values for
:func:`paired_noise`. :func:`evaluate_examples` is the older per-split score (pairs: MRR@10
against the split's own positives), kept for callers of it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from esrag.encoder import EspressoEncoder, View
from esrag.evaluation.metrics import mrr_at_k, ndcg_at_k
from esrag.train.examples import Examples
from esrag.train.holdout import RetrievalSlice, ScoredSlice, Slice

__all__ = ["SliceScores", "evaluate_examples", "mrr_at_10", "paired_noise", "score_slices", "spearman"]


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


# ---------------------------------------------------------------------- held-out slices
@dataclass(frozen=True)
class SliceScores:
    """One evaluation of the held-out slices.

    ``values``: ``"<source> @ <view> <metric>"`` → value; ``full`` / ``shallow``: the mean
    over slices of the full view and of the other views (None without any); ``items``: per
    slice, the full view's per-item values (nDCG@10 per query, or the cosine per scored
    pair), which :func:`paired_noise` compares with the base model's.
    """

    values: dict[str, float]
    full: float
    shallow: float | None
    items: dict[str, list[float]]

    def result(self, noise: float) -> dict[str, float]:
        """The scores as selection and checkpoints keep them: ``score`` and ``full`` (the full
        view), ``noise`` (its standard error against the base), ``shallow``, every value.
        """
        out = {"score": self.full, "full": self.full, "noise": noise}
        if self.shallow is not None:
            out["shallow"] = self.shallow
        out.update(self.values)
        return out

    def describe(self, noise: float) -> str:
        """One line for the log."""
        shallow = "" if self.shallow is None else f", shallow views {self.shallow:.4f}"
        return f"full view {self.full:.4f} (± {noise:.4f} vs base){shallow}"


def _retrieval(
    encoder: EspressoEncoder,
    part: RetrievalSlice,
    views: Sequence[View],
    batch_size: int,
    query_views: Sequence[View] = (),
) -> tuple[list[float], list[float], list[float]]:
    """(per-view mean nDCG@10, per-query nDCG@10 of the last view, per-query-view mean nDCG@10
    of shallow queries against the last view's documents).
    """
    queries = encoder.encode(part.queries, [*views, *query_views], batch_size=batch_size)
    docs = encoder.encode(part.docs, views, batch_size=batch_size)
    means: list[float] = []
    per_query: list[float] = []
    for q, d in zip(queries, docs, strict=False):
        per_query = _ndcg_per_query(q, d, part)
        means.append(float(np.mean(per_query)) if per_query else 0.0)
    shallow = [_ndcg_per_query(q, docs[-1], part) for q in queries[len(views) :]]
    return means, per_query, [float(np.mean(v)) if v else 0.0 for v in shallow]


def _ndcg_per_query(queries: np.ndarray, docs: np.ndarray, part: RetrievalSlice) -> list[float]:
    top = np.argsort(-(queries @ docs.T), axis=1, kind="stable")[:, :10]
    run = {str(i): [str(int(j)) for j in row] for i, row in enumerate(top)}
    values = ndcg_at_k(run, part.qrels, 10, per_query=True)
    return [values.get(str(i), 0.0) for i in range(len(part.queries))]


def score_slices(
    encoder: EspressoEncoder,
    slices: Sequence[Slice],
    views: Sequence[View],
    *,
    batch_size: int = 32,
    query_views: Sequence[View] = (),
) -> SliceScores:
    """Score every slice at every view; the last of ``views`` is the full view.

    ``query_views`` (retrieval slices only): shallow query views scored against the full
    view's documents (``"<source> @ query <view> ndcg@10"``), counted with the shallow views.
    """
    values: dict[str, float] = {}
    full: list[float] = []
    shallow: list[float] = []
    items: dict[str, list[float]] = {}
    for part in slices:
        if isinstance(part, ScoredSlice):
            left = encoder.encode(part.left, views, batch_size=batch_size)
            right = encoder.encode(part.right, views, batch_size=batch_size)
            cosines = [(a * b).sum(axis=1) for a, b in zip(left, right, strict=True)]
            gold = np.asarray(part.gold, dtype=np.float64)
            means = [spearman(c, gold) for c in cosines]
            items[part.source] = [float(c) for c in cosines[-1]]
            metric = "spearman"
        else:
            means, items[part.source], asymmetric = _retrieval(encoder, part, views, batch_size, query_views)
            metric = "ndcg@10"
            for view, value in zip(query_views, asymmetric, strict=True):
                values[f"{part.source} @ query {view} {metric}"] = value
            shallow += asymmetric
        for view, value in zip(views, means, strict=True):
            values[f"{part.source} @ {view} {metric}"] = value
        full.append(means[-1])
        shallow += means[:-1]
    return SliceScores(
        values=values,
        full=float(np.mean(full)) if full else float("nan"),
        shallow=float(np.mean(shallow)) if shallow else None,
        items=items,
    )


def paired_noise(
    slices: Sequence[Slice],
    items: dict[str, list[float]],
    base: dict[str, list[float]],
    *,
    resamples: int = 200,
    seed: int = 0,
) -> float:
    """Standard error of (this model − the base model) in the mean full-view score.

    Retrieval slices: the standard error of the mean per-query difference (paired).
    Scored slices: a paired bootstrap (``resamples`` seeded resamples of the pairs) of the
    difference in Spearman. Slices combine as the full score does (their mean). 0 when the
    base items are missing (the base model itself, or a slice it did not see).
    """
    variances: list[float] = []
    rng = np.random.default_rng(seed)
    for part in slices:
        mine, theirs = items.get(part.source), base.get(part.source)
        if mine is None or theirs is None or len(mine) != len(theirs) or len(mine) < 2:
            variances.append(0.0)
            continue
        a, b = np.asarray(mine, dtype=np.float64), np.asarray(theirs, dtype=np.float64)
        if isinstance(part, ScoredSlice):
            gold = np.asarray(part.gold, dtype=np.float64)
            draws = rng.integers(0, len(a), size=(resamples, len(a)))
            diffs = [spearman(a[d], gold[d]) - spearman(b[d], gold[d]) for d in draws]
            variances.append(float(np.var(diffs, ddof=1)))
        else:
            variances.append(float(np.var(a - b, ddof=1) / len(a)))
    return float(np.sqrt(sum(variances)) / len(variances)) if variances else 0.0
