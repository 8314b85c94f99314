"""Sweep an existing index's coarse settings and apply the cheapest one keeping a target."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from esrag.evaluation.metrics import Qrels, require_judged_queries
from esrag.evaluation.sweep import SweepGrid, SweepResult, run_sweep
from esrag.evaluation.vectors import encode_layers, sample_doc_queries

__all__ = ["apply_recommendation", "sweep_index", "tune_index"]

log = logging.getLogger(__name__)


def sweep_index(
    index: Any,
    encoder: Any,
    *,
    queries: Mapping[str, str] | None = None,
    qrels: Qrels | None = None,
    grid: SweepGrid | None = None,
    target: float = 0.99,
    sample_queries: int = 200,
    seed: int = 0,
    timing_queries: int = 50,
    cache: bool = True,
    batch_size: int = 32,
    show_progress_bar: bool | None = None,
) -> tuple[SweepResult, dict[int, Any]]:
    """Sweep the index's own documents; returns the result and the per-layer doc vectors.

    Without ``qrels`` the queries are ``sample_queries`` spans sampled from the documents
    and quality is measured against the index's own fine-only ranking (label-free).
    """
    ids = index.ids()
    if not ids:
        raise ValueError("the index is empty: nothing to sweep")
    texts = [doc.text for doc in index.get_by_ids(ids)]
    if len(texts) != len(ids):
        raise ValueError("the index holds documents without stored text; cannot re-encode them")
    if qrels is not None:
        if queries is None:
            raise ValueError("qrels need queries")
        qids = [q for q in queries if q in qrels]
        if not qids:
            raise ValueError("no query has judgments in the qrels (do the query ids match?)")
        require_judged_queries(qids, qrels)
        qtexts = [queries[q] for q in qids]
    else:
        qtexts = list(queries.values()) if queries else sample_doc_queries(texts, sample_queries, seed=seed)
        qids = [f"q{i}" for i in range(len(qtexts))]
    grid = grid or SweepGrid.default(encoder.num_layers, encoder.hidden_size)
    fine_view = index.config.fine_view or encoder.default_view
    layers = sorted({*grid.layers, fine_view.layer})
    log.info("encoding %d documents and %d queries at layers %s", len(texts), len(qtexts), layers)
    doc_layers = encode_layers(
        encoder, texts, layers, cache=cache, batch_size=batch_size, show_progress_bar=show_progress_bar
    )
    query_layers = encode_layers(encoder, qtexts, layers, cache=False, batch_size=batch_size)
    result = run_sweep(
        doc_layers,
        query_layers,
        doc_ids=ids,
        qids=qids,
        fine_view=(fine_view.layer, fine_view.dim),
        grid=grid,
        qrels=qrels,
        base_config=index.config,
        target=target,
        timing_queries=timing_queries,
        show_progress_bar=show_progress_bar,
    )
    return result, doc_layers


def apply_recommendation(index: Any, result: SweepResult, doc_layers: dict[int, Any]) -> bool:
    """Reconfigure ``index`` to ``result.recommended``; False (unchanged) when there is none.

    ``doc_layers`` are the per-layer document vectors the sweep used (in ``index.ids()``
    order), so the coarse stage is rebuilt without re-encoding. The caller saves the index.
    """
    rec = result.recommended
    if rec is None:
        log.warning("%s", result.recommendation_text())
        return False
    index.reconfigure(
        coarse_layer=rec.layer,
        coarse_dim=rec.dim,
        transform=rec.transform,
        shortlist=rec.shortlist,
        coarse_source=doc_layers[rec.layer],
    )
    return True


def tune_index(index: Any, encoder: Any, **kwargs: Any) -> SweepResult:
    """:func:`sweep_index`, then :func:`apply_recommendation` (the caller saves)."""
    result, doc_layers = sweep_index(index, encoder, **kwargs)
    apply_recommendation(index, result, doc_layers)
    return result
