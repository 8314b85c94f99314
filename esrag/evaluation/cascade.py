"""Evaluate a cascade index against its own fine-only (exact, full-model) reference."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from esrag.evaluation.metrics import (
    DEFAULT_METRICS,
    Qrels,
    evaluate_run,
    parse_metric,
    require_judged_queries,
)

__all__ = ["CascadeEvaluation", "StageResult", "evaluate_cascade", "run_mode", "warn_missing_documents"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StageResult:
    """Quality and per-query search latency of one search mode."""

    mode: str
    metrics: dict[str, float]
    latency_ms_p50: float
    latency_ms_p95: float
    settings: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """Metrics, latencies and settings as a JSON object."""
        return {
            **{name: round(value, 6) for name, value in self.metrics.items()},
            "latency_ms_p50": round(self.latency_ms_p50, 4),
            "latency_ms_p95": round(self.latency_ms_p95, 4),
            "settings": self.settings,
        }


@dataclass(frozen=True)
class CascadeEvaluation:
    """The cascade beside the fine-only reference on the same queries."""

    cascade: StageResult
    fine: StageResult
    num_queries: int

    @property
    def retention(self) -> float:
        """Cascade nDCG@10 / fine-only nDCG@10 (the first metric if nDCG@10 is absent)."""
        name = "ndcg@10" if "ndcg@10" in self.fine.metrics else next(iter(self.fine.metrics))
        ref = self.fine.metrics[name]
        return self.cascade.metrics[name] / ref if ref > 0 else 0.0

    def to_json(self) -> dict[str, Any]:
        """Both stages, the retention and the query count as a JSON object."""
        return {
            "cascade": self.cascade.to_json(),
            "fine": self.fine.to_json(),
            "retention": round(self.retention, 6),
            "num_queries": self.num_queries,
        }

    def to_markdown(self) -> str:
        """A Markdown table of every metric for the cascade beside the fine-only reference."""
        names = [*self.cascade.metrics, "latency_ms_p50", "latency_ms_p95"]
        rows = ["| metric | cascade | fine-only | cascade / fine |", "|---|---:|---:|---:|"]
        for name in names:
            c = self.cascade.to_json()[name]
            f = self.fine.to_json()[name]
            ratio = f"{c / f:.3f}" if f else "-"
            rows.append(f"| {name} | {c:.4f} | {f:.4f} | {ratio} |")
        return "\n".join(rows)


def _percentile(values: Sequence[float], q: float) -> float:
    return float(np.percentile(np.asarray(values, dtype=np.float64), q)) if values else 0.0


def run_mode(
    index: Any,
    coarse_q: np.ndarray,
    fine_q: np.ndarray,
    qids: Sequence[str],
    *,
    mode: str,
    k: int,
    shortlist: int | None,
    timing_queries: int,
    filter: Mapping[str, Any] | None = None,
) -> tuple[dict[str, list[str]], list[float]]:
    """Batched search for the run, then single-query searches timed (milliseconds, one
    FAISS thread).
    """
    result = index.search_embeddings(coarse_q, fine_q, k=k, shortlist=shortlist, filter=filter, mode=mode)
    run = {qid: list(ids) for qid, ids in zip(qids, result.ids, strict=True)}
    latencies: list[float] = []
    n = min(timing_queries, len(qids))
    with _single_thread():
        if n:
            index.search_embeddings(
                coarse_q[:1], fine_q[:1], k=k, shortlist=shortlist, filter=filter, mode=mode
            )  # warm-up
        for i in range(n):
            start = time.perf_counter()
            index.search_embeddings(
                coarse_q[i : i + 1], fine_q[i : i + 1], k=k, shortlist=shortlist, filter=filter, mode=mode
            )
            latencies.append((time.perf_counter() - start) * 1000.0)
    return run, latencies


@contextlib.contextmanager
def _single_thread() -> Iterator[None]:
    """Time single queries on one thread (FAISS OpenMP and numpy's BLAS): thread fork/join on
    a busy machine otherwise adds milliseconds of noise to a sub-millisecond search.
    """
    import faiss

    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        with contextlib.ExitStack() as stack:
            try:
                from threadpoolctl import threadpool_limits
            except ImportError:  # pragma: no cover - optional
                pass
            else:
                stack.enter_context(threadpool_limits(limits=1))
            yield
    finally:
        faiss.omp_set_num_threads(before)


def evaluate_cascade(
    index: Any,
    queries: Mapping[str, str],
    qrels: Qrels,
    *,
    shortlist: int | None = None,
    metrics: Sequence[str] = DEFAULT_METRICS,
    timing_queries: int = 200,
    filter: Mapping[str, Any] | None = None,
) -> CascadeEvaluation:
    """Metrics and search latency p50/p95 of ``index``'s cascade and its fine-only reference.

    Latency is per single-query search, measured after one encoder pass for all queries:
    the encoder pass is the same for both modes (it always reaches the fine layer).
    Only queries that have judgments in ``qrels`` are evaluated; a query with a relevant
    judgment but no text in ``queries`` is an error (it would silently score 0).
    """
    qids = [qid for qid in queries if qid in qrels]
    if not qids:
        raise ValueError("no query has judgments in the qrels (do the query ids match?)")
    require_judged_queries(qids, qrels)
    n_docs = len(index)
    if n_docs == 0:
        raise ValueError("the index is empty")
    warn_missing_documents(index, qids, qrels)
    coarse_q, fine_q = index.encode_queries([queries[q] for q in qids])
    return evaluate_encoded(
        index,
        coarse_q,
        fine_q,
        qids,
        qrels,
        shortlist=shortlist,
        metrics=metrics,
        timing_queries=timing_queries,
        filter=filter,
    )


def warn_missing_documents(index: Any, qids: Sequence[str], qrels: Qrels) -> list[str]:
    """Log (and return) the relevant judged documents of ``qids`` that ``index`` lacks: they
    can only count as misses, which usually means the qrels belong to another corpus.
    """
    relevant = {doc for q in qids for doc, grade in qrels.get(q, {}).items() if grade > 0}
    missing = sorted(doc for doc in relevant if doc not in index)
    if missing:
        log.warning(
            "%d of %d relevant documents in the qrels are not in the index (e.g. %s); "
            "they count as misses for every mode (was the index built from this corpus?)",
            len(missing),
            len(relevant),
            ", ".join(repr(d) for d in missing[:3]),
        )
    return missing


def evaluate_encoded(
    index: Any,
    coarse_q: np.ndarray,
    fine_q: np.ndarray,
    qids: Sequence[str],
    qrels: Qrels,
    *,
    shortlist: int | None = None,
    metrics: Sequence[str] = DEFAULT_METRICS,
    timing_queries: int = 200,
    filter: Mapping[str, Any] | None = None,
) -> CascadeEvaluation:
    """:func:`evaluate_cascade` on already-encoded queries (every judged query among ``qids``)."""
    require_judged_queries(qids, qrels)
    n_docs = len(index)
    depth = max(k for _name, k in map(parse_metric, metrics))
    shortlist = min(shortlist or index.config.shortlist, n_docs)
    stages: dict[str, StageResult] = {}
    for mode in ("cascade", "fine"):
        k = min(depth, n_docs, shortlist if mode == "cascade" else n_docs)
        run, lat = run_mode(
            index,
            coarse_q,
            fine_q,
            qids,
            mode=mode,
            k=k,
            shortlist=shortlist if mode == "cascade" else max(k, 1),
            timing_queries=timing_queries,
            filter=filter,
        )
        settings = _settings(index, mode, shortlist, k)
        stages[mode] = StageResult(
            mode, evaluate_run(run, qrels, metrics), _percentile(lat, 50), _percentile(lat, 95), settings
        )
        log.info("%s: %s", mode, stages[mode].metrics)
    return CascadeEvaluation(stages["cascade"], stages["fine"], len(qids))


def _settings(index: Any, mode: str, shortlist: int, k: int) -> dict[str, Any]:
    config = index.config
    embedder = getattr(index, "embedder", None)
    fine_view = config.fine_view or getattr(embedder, "default_view", None)
    out: dict[str, Any] = {
        "mode": mode,
        "k": k,
        "num_docs": len(index),
        "fine_view": str(fine_view) if fine_view is not None else None,
    }
    if mode == "cascade":
        out.update(
            {
                "shortlist": shortlist,
                "coarse_layer": config.coarse_layer or getattr(embedder, "num_layers", None),
                "coarse_dim": getattr(index, "coarse_dim", None) or config.coarse_dim,
                "transform": config.transform.value,
                "index_type": config.index_type,
            }
        )
    return out
