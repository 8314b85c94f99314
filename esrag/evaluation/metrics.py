"""Retrieval metrics, implemented once: nDCG@k, recall@k, MRR@k (BEIR / trec_eval conventions).

A *run* maps a query id to its ranked list of document ids (best first) or to a
``{doc_id: score}`` dict (sorted by score descending, ties by doc id descending, as
trec_eval does). *qrels* map a query id to ``{doc_id: graded relevance}``; a document is
relevant when its grade is > 0.

Conventions (those of ``pytrec_eval``'s ``ndcg_cut``/``recall``/``recip_rank`` as BEIR uses
them): linear gains (the grade itself), log2(rank + 1) discount, the ideal ranking built
from the qrels alone. Queries are the qrels' queries with at least one relevant document; a
query missing from the run scores 0 (stricter than trec_eval, which skips it). Run
documents without a judgment count as non-relevant.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Literal, overload

from esrag.validation import check_int

__all__ = [
    "DEFAULT_METRICS",
    "Qrels",
    "Run",
    "evaluate_run",
    "mrr_at_k",
    "ndcg_at_k",
    "parse_metric",
    "recall_at_k",
    "require_judged_queries",
]

Qrels = Mapping[str, Mapping[str, int]]
Run = Mapping[str, Sequence[str] | Mapping[str, float]]


def _ranked(qid: str, ranking: Sequence[str] | Mapping[str, float]) -> list[str]:
    if isinstance(ranking, Mapping):
        return [d for d, _ in sorted(ranking.items(), key=lambda kv: (-kv[1], _Rev(kv[0])))]
    if isinstance(ranking, str):
        raise TypeError(f"run[{qid!r}] must be a list of doc ids, got a string")
    docs = list(ranking)
    if len(set(docs)) != len(docs):
        seen: set[str] = set()
        dup = next(d for d in docs if d in seen or seen.add(d))  # type: ignore[func-returns-value]
        raise ValueError(f"run[{qid!r}] lists doc id {dup!r} twice")
    return docs


class _Rev(str):
    """A string that sorts in reverse (trec_eval breaks score ties by doc id descending)."""

    def __lt__(self, other: str) -> bool:  # type: ignore[override]
        return str.__gt__(self, other)


def _check_k(k: int) -> None:
    check_int(k, "k", minimum=1, expected="a positive int")


def _queries(qrels: Qrels) -> list[str]:
    return [qid for qid, judged in qrels.items() if any(g > 0 for g in judged.values())]


def _ndcg(docs: list[str], judged: Mapping[str, int], k: int) -> float:
    dcg = sum(
        judged.get(d, 0) / math.log2(rank + 2) for rank, d in enumerate(docs[:k]) if judged.get(d, 0) > 0
    )
    ideal = sorted((g for g in judged.values() if g > 0), reverse=True)[:k]
    idcg = sum(g / math.log2(rank + 2) for rank, g in enumerate(ideal))
    return dcg / idcg if idcg > 0 else 0.0


def _recall(docs: list[str], judged: Mapping[str, int], k: int) -> float:
    relevant = {d for d, g in judged.items() if g > 0}
    return len(relevant.intersection(docs[:k])) / len(relevant) if relevant else 0.0


def _mrr(docs: list[str], judged: Mapping[str, int], k: int) -> float:
    for rank, d in enumerate(docs[:k]):
        if judged.get(d, 0) > 0:
            return 1.0 / (rank + 1)
    return 0.0


def require_judged_queries(qids: Iterable[str], qrels: Qrels, *, where: str = "the qrels") -> None:
    """Raise ``ValueError`` when a query the metrics would score (one with a relevant
    judgment in ``qrels``) is missing from ``qids``: it would silently score 0.

    The message names ``where`` (e.g. the qrels file), how many ids are missing and the
    first few of them.
    """
    have = set(qids)
    missing = [qid for qid in _queries(qrels) if qid not in have]
    if missing:
        shown = ", ".join(repr(qid) for qid in missing[:5])
        more = f" (first 5 of {len(missing)})" if len(missing) > 5 else ""
        raise ValueError(
            f"{where}: {len(missing)} judged query id(s) have no query text: {shown}{more}; "
            "give the queries of every judged query, or leave their judgments out"
        )


_FUNCS = {"ndcg": _ndcg, "recall": _recall, "mrr": _mrr}


def _per_query(name: str, run: Run, qrels: Qrels, k: int) -> dict[str, float]:
    _check_k(k)
    func = _FUNCS[name]
    return {qid: func(_ranked(qid, run[qid]) if qid in run else [], qrels[qid], k) for qid in _queries(qrels)}


def _mean(values: dict[str, float]) -> float:
    return sum(values.values()) / len(values) if values else 0.0


@overload
def ndcg_at_k(run: Run, qrels: Qrels, k: int = ..., *, per_query: Literal[False] = ...) -> float: ...
@overload
def ndcg_at_k(run: Run, qrels: Qrels, k: int = ..., *, per_query: Literal[True]) -> dict[str, float]: ...
def ndcg_at_k(run: Run, qrels: Qrels, k: int = 10, *, per_query: bool = False) -> float | dict[str, float]:
    """Mean nDCG@k over judged queries (or ``{qid: nDCG@k}`` with ``per_query=True``)."""
    values = _per_query("ndcg", run, qrels, k)
    return values if per_query else _mean(values)


@overload
def recall_at_k(run: Run, qrels: Qrels, k: int = ..., *, per_query: Literal[False] = ...) -> float: ...
@overload
def recall_at_k(run: Run, qrels: Qrels, k: int = ..., *, per_query: Literal[True]) -> dict[str, float]: ...
def recall_at_k(run: Run, qrels: Qrels, k: int = 10, *, per_query: bool = False) -> float | dict[str, float]:
    """Mean recall@k: the share of a query's relevant documents found in its top k."""
    values = _per_query("recall", run, qrels, k)
    return values if per_query else _mean(values)


@overload
def mrr_at_k(run: Run, qrels: Qrels, k: int = ..., *, per_query: Literal[False] = ...) -> float: ...
@overload
def mrr_at_k(run: Run, qrels: Qrels, k: int = ..., *, per_query: Literal[True]) -> dict[str, float]: ...
def mrr_at_k(run: Run, qrels: Qrels, k: int = 10, *, per_query: bool = False) -> float | dict[str, float]:
    """Mean reciprocal rank of the first relevant document within the top k (0 if none)."""
    values = _per_query("mrr", run, qrels, k)
    return values if per_query else _mean(values)


_METRIC = re.compile(r"^(ndcg|recall|mrr)@(\d+)$")


def parse_metric(name: str) -> tuple[str, int]:
    """``"ndcg@10"`` → ``("ndcg", 10)``; unknown names raise ``ValueError``."""
    match = _METRIC.match(name.strip().lower())
    if not match or int(match.group(2)) < 1:
        raise ValueError(f"unknown metric {name!r}; expected ndcg@K, recall@K or mrr@K (K ≥ 1)")
    return match.group(1), int(match.group(2))


DEFAULT_METRICS = ("ndcg@10", "recall@10", "recall@100", "mrr@10")


def evaluate_run(run: Run, qrels: Qrels, metrics: Sequence[str] = DEFAULT_METRICS) -> dict[str, float]:
    """Mean of each named metric, e.g. ``{"ndcg@10": 0.64, "recall@100": 0.92}``."""
    parsed = [parse_metric(m) for m in metrics]
    ranked = {qid: _ranked(qid, docs) for qid, docs in run.items()}
    return {f"{name}@{k}": _mean(_per_query(name, ranked, qrels, k)) for name, k in parsed}
