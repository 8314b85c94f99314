"""Sweep an existing index's settings and apply the cheapest one (end to end) keeping a target."""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from typing import Any

from esrag.evaluation.encoder_cost import measure_encoder_cost
from esrag.evaluation.metrics import Qrels, require_judged_queries
from esrag.evaluation.sweep import SweepGrid, SweepResult, run_sweep
from esrag.evaluation.vectors import encode_layers, sample_doc_queries

__all__ = ["apply_recommendation", "sweep_index", "tune_index"]

log = logging.getLogger(__name__)

_COST_DOCS = 2000
"""Documents whose token counts estimate the ingest FLOPs (the first ones)."""


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
    cost: str = "flops",
    timing_docs: int = 32,
) -> tuple[SweepResult, dict[int, Any]]:
    """Sweep the index's own documents; returns the result and the per-layer doc vectors.

    Without ``qrels`` the queries are ``sample_queries`` spans sampled from the documents
    and quality is measured against the index's own fine-only ranking (label-free). The
    encoder pass to every layer the grid needs is timed here (``timing_queries`` queries one
    at a time, ``timing_docs`` documents batched) and its FLOPs estimated from the model's
    shape and the texts' token counts, so each setting is costed end to end on this machine.
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
    layers = sorted({*grid.layers, *grid.fine_layers, *grid.query_layers, fine_view.layer})
    log.info("encoding %d documents and %d queries at layers %s", len(texts), len(qtexts), layers)
    doc_layers = encode_layers(
        encoder, texts, layers, cache=cache, batch_size=batch_size, show_progress_bar=show_progress_bar
    )
    query_layers = encode_layers(encoder, qtexts, layers, cache=False, batch_size=batch_size)
    encoder_cost = measure_encoder_cost(
        encoder,
        qtexts,
        texts[:_COST_DOCS],
        layers,
        timing_queries=timing_queries,
        timing_docs=timing_docs,
        batch_size=batch_size,
    )
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
        encoder_cost=encoder_cost,
        cost=cost,
    )
    return result, doc_layers


def apply_recommendation(index: Any, result: SweepResult, doc_layers: dict[int, Any]) -> bool:
    """Reconfigure ``index`` to ``result.recommended``; False (unchanged) when there is none.

    ``doc_layers`` are the per-layer document vectors the sweep used (in ``index.ids()``
    order), so the coarse stage (and a shallow query's map) is rebuilt without re-encoding. A
    recommended early-exit margin is set too (none: cleared). A
    recommendation with another fine layer needs a rebuild of the fine vectors: it is logged
    and not applied (False). The caller saves the index.
    """
    rec = result.recommended
    if rec is None:
        log.warning("%s", result.recommendation_text())
        return False
    fine_layer = int(str(result.reference["fine_view"]).split(":")[0])
    if rec.fine_layer and rec.fine_layer != fine_layer:
        log.warning(
            "the recommendation stores fine vectors of layer %d, the index has layer %d: rebuild it "
            "(esrag build --rebuild --fine %d:DIM) to apply it",
            rec.fine_layer,
            fine_layer,
            rec.fine_layer,
        )
        return False
    changes: dict[str, Any] = {}
    if rec.query_layer:
        changes = {"query_layer": rec.query_layer, "query_map": rec.query_map}
        changes["query_source"] = doc_layers[rec.query_layer]
    elif index.query_map is not None:
        changes = {"query_layer": fine_layer}  # back to full-depth queries
    changes["exit_margin"] = math.inf if rec.exit_margin is None else rec.exit_margin  # inf: none
    index.reconfigure(
        coarse_layer=rec.layer,
        coarse_dim=rec.dim,
        transform=rec.transform,
        shortlist=rec.shortlist,
        coarse_source=doc_layers[rec.layer],
        **changes,
    )
    return True


def tune_index(index: Any, encoder: Any, **kwargs: Any) -> SweepResult:
    """:func:`sweep_index`, then :func:`apply_recommendation` (the caller saves)."""
    result, doc_layers = sweep_index(index, encoder, **kwargs)
    apply_recommendation(index, result, doc_layers)
    return result
