"""Evaluate a cascade index against its own fine-only (exact, full-depth) reference, in quality
and in end-to-end cost (the query's encoder pass included, see :mod:`.end_to_end`).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from esrag._arrays import percentile
from esrag.evaluation.end_to_end import EndToEnd, end_to_end
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
    end_to_end: EndToEnd | None = None
    """Text in → ids out: encoder pass + search (``None`` when evaluated on encoded queries)."""

    def to_json(self) -> dict[str, Any]:
        """Metrics, search latencies (``latency_*``), end-to-end cost and settings as a JSON object."""
        out = {
            **{name: round(value, 6) for name, value in self.metrics.items()},
            "latency_ms_p50": round(self.latency_ms_p50, 4),
            "latency_ms_p95": round(self.latency_ms_p95, 4),
            "settings": self.settings,
        }
        if self.end_to_end is not None:
            e2e = self.end_to_end
            out.update(end_to_end_ms_p50=round(e2e.ms_p50, 4), end_to_end_ms_p95=round(e2e.ms_p95, 4))
            out.update(end_to_end_flops=round(e2e.flops), end_to_end=e2e.to_json())
        return out


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
        if self.cascade.end_to_end is not None and self.fine.end_to_end is not None:
            names += ["end_to_end_ms_p50", "end_to_end_ms_p95", "end_to_end_flops"]
        rows = ["| metric | cascade | fine-only | cascade / fine |", "|---|---:|---:|---:|"]
        for name in names:
            c = self.cascade.to_json()[name]
            f = self.fine.to_json()[name]
            ratio = f"{c / f:.3f}" if f else "-"
            shown = (
                (f"{c / 1e6:.1f}M", f"{f / 1e6:.1f}M") if name.endswith("flops") else (f"{c:.4f}", f"{f:.4f}")
            )
            rows.append(f"| {name} | {shown[0]} | {shown[1]} | {ratio} |")
        return "\n".join(rows)


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
    """Metrics, search latency and end-to-end cost of ``index``'s cascade and its fine-only
    reference (exact search with full-depth queries: the documents' own view).

    ``latency_*`` is the search alone, per single query after one encoder pass for all;
    ``end_to_end`` (text in → ids out, one query at a time) adds each query's encoder pass,
    which for a shallow-query index stops at its query layer, and the FLOPs of both.
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
    texts = [queries[q] for q in qids]
    coarse_q, fine_q = index.encode_queries(texts)
    reference = index.encode_queries(texts, full_depth=True) if index.query_map is not None else None
    result = evaluate_encoded(
        index,
        coarse_q,
        fine_q,
        qids,
        qrels,
        shortlist=shortlist,
        metrics=metrics,
        timing_queries=timing_queries,
        filter=filter,
        reference=reference,
    )
    stages = []
    for stage, full in ((result.cascade, False), (result.fine, True)):
        k, size = stage.settings["k"], stage.settings.get("shortlist", stage.settings["k"])
        e2e = end_to_end(
            index, texts, mode=stage.mode, k=k, shortlist=size, timing_queries=timing_queries, full_depth=full
        )
        stages.append(
            replace(stage, end_to_end=e2e, settings={**stage.settings, "query_depth": e2e.query_depth})
        )
    return replace(result, cascade=stages[0], fine=stages[1])


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
    reference: tuple[np.ndarray, np.ndarray] | None = None,
) -> CascadeEvaluation:
    """:func:`evaluate_cascade` on already-encoded queries (every judged query among ``qids``),
    without the end-to-end cost; ``reference``: the (coarse source, fine) query vectors of the
    fine-only stage when they differ from the cascade's (a shallow-query index).
    """
    require_judged_queries(qids, qrels)
    n_docs = len(index)
    depth = max(k for _name, k in map(parse_metric, metrics))
    shortlist = min(shortlist or index.config.shortlist, n_docs)
    stages: dict[str, StageResult] = {}
    for mode in ("cascade", "fine"):
        k = min(depth, n_docs, shortlist if mode == "cascade" else n_docs)
        source, fine = (coarse_q, fine_q) if mode == "cascade" or reference is None else reference
        run, lat = run_mode(
            index,
            source,
            fine,
            qids,
            mode=mode,
            k=k,
            shortlist=shortlist if mode == "cascade" else max(k, 1),
            timing_queries=timing_queries,
            filter=filter,
        )
        settings = _settings(index, mode, shortlist, k)
        stages[mode] = StageResult(
            mode, evaluate_run(run, qrels, metrics), percentile(lat, 50), percentile(lat, 95), settings
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
        qmap = getattr(index, "query_map", None)
        out.update(
            {
                "query_layer": qmap.layer if qmap is not None else None,
                "query_map": qmap.kind.value if qmap is not None else None,
                "shortlist": shortlist,
                "coarse_layer": config.coarse_layer or getattr(embedder, "num_layers", None),
                "coarse_dim": getattr(index, "coarse_dim", None) or config.coarse_dim,
                "transform": config.transform.value,
                "index_type": config.index_type,
            }
        )
    return out
