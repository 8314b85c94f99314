"""Sweep cascade settings — coarse (layer, dim, transform) × shortlist × fine (document) layer ×
query layer (× early-exit margin) — and weigh the quality each keeps against its end-to-end cost.

Every setting is compared with the fine-only (exact, full-depth) reference on the same
queries. With qrels, quality is nDCG@10 and retention is cascade / fine-only nDCG@10.
Without qrels (label-free), the reference is the fine-only top-10 itself and retention is
the share of it the cascade returns (overlap@10).

A query's cost is its encoder pass to the deepest layer it needs (from ``encoder_cost``,
measured on the machine that runs the sweep; zero when none is given) plus the search. A
shallow query (query layer below the fine layer) stops its pass at the query layer and goes
through the index's query map (:class:`esrag.index.query.QueryMap`), fitted here exactly as
an index fits it: on the first ``train_size`` documents.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np

from esrag._arrays import percentile
from esrag.evaluation.cascade import run_mode
from esrag.evaluation.cost import cascade_flops, fine_flops, query_map_flops
from esrag.evaluation.encoder_cost import EncoderCost
from esrag.evaluation.exit_calibration import exit_points, per_query_quality
from esrag.evaluation.metrics import Qrels, evaluate_run, require_judged_queries
from esrag.evaluation.sweep_result import (
    SweepGrid,
    SweepPoint,
    SweepResult,
    pareto_front,
    recommend,
)
from esrag.evaluation.vectors import fine_vectors
from esrag.index.early_exit import coarse_margins

__all__ = ["SweepGrid", "SweepPoint", "SweepResult", "pareto_front", "run_sweep"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Query:
    """How the queries of one setting are encoded: full depth, or shallow with a map kind."""

    layer: int = 0
    kind: str = ""


@dataclass
class _Sweep:
    """What every setting of one sweep shares."""

    doc_layers: Mapping[int, np.ndarray]
    query_layers: Mapping[int, np.ndarray]
    doc_ids: list[str]
    qids: list[str]
    fine_dim: int
    base: Any
    timing_queries: int
    encoder_cost: EncoderCost | None
    judged: Qrels = field(default_factory=dict)
    metric: str = "ndcg@10"
    labelled: bool = True
    ref_quality: float = 0.0
    ref_layer: int = 0
    fine_docs: dict[int, np.ndarray] = field(default_factory=dict)
    """Fine layer -> the documents' fine vectors."""
    maps: dict[tuple[str, int, int], Any] = field(default_factory=dict)
    """Fitted ridge maps by (target, query layer, target layer)."""
    target: float = 0.99
    early_exit: bool = False

    @property
    def k(self) -> int:
        return min(10, len(self.doc_ids))

    @property
    def hidden(self) -> int:
        return int(next(iter(self.doc_layers.values())).shape[1])

    def layer(self, vectors: Mapping[int, np.ndarray], layer: int, what: str) -> np.ndarray:
        if layer not in vectors:
            raise ValueError(
                f"the sweep needs the {what} vectors of layer {layer}; got layers {sorted(vectors)}"
            )
        return vectors[layer]

    def encoder(self, depth: int) -> tuple[float, float]:
        return self.encoder_cost.query(depth) if self.encoder_cost else (0.0, 0.0)

    def ingest(self, depth: int) -> tuple[float, float]:
        return self.encoder_cost.document(depth) if self.encoder_cost else (0.0, 0.0)


def _reference(sw: _Sweep, fine_layer: int) -> tuple[dict[str, Any], dict[str, list[str]]]:
    """The fine-only exact full-depth reference: its numbers and its run."""
    from esrag.index import CascadeIndex

    docs = sw.layer(sw.doc_layers, fine_layer, "document")
    fine_q = fine_vectors(sw.layer(sw.query_layers, fine_layer, "query"), sw.fine_dim)
    config = sw.base.replace(
        coarse_layer=fine_layer,
        fine_view=(fine_layer, sw.fine_dim),
        transform="prefix",
        coarse_dim=min(sw.base.coarse_dim, sw.hidden),
        index_type="Flat",
    )
    index = CascadeIndex.build_from_embeddings(
        docs, fine_vectors(docs, sw.fine_dim), ids=sw.doc_ids, config=config
    )
    run, lat = run_mode(
        index,
        sw.query_layers[fine_layer],
        fine_q,
        sw.qids,
        mode="fine",
        k=sw.k,
        shortlist=sw.k,
        timing_queries=sw.timing_queries,
    )
    encoder_flops, encoder_ms = sw.encoder(fine_layer)
    search_flops = fine_flops(len(sw.doc_ids), sw.fine_dim)
    reference = {
        "fine_view": f"{fine_layer}:{sw.fine_dim}",
        "latency_ms_p50": percentile(lat, 50),
        "latency_ms_p95": percentile(lat, 95),
        "flops_per_query": search_flops,
        "encoder_flops": encoder_flops,
        "encoder_ms_p50": encoder_ms,
        "end_to_end_flops": encoder_flops + search_flops,
        "end_to_end_ms_p50": encoder_ms + percentile(lat, 50),
        "ingest_flops_per_doc": sw.ingest(fine_layer)[0],
        "ingest_ms_per_doc": sw.ingest(fine_layer)[1],
        "num_queries": len(sw.qids),
        "num_docs": len(sw.doc_ids),
    }
    return reference, run


def _settings(grid: SweepGrid, fine_layer: int) -> list[tuple[int, int, int, str]]:
    """Every (fine layer, coarse layer, dim, transform) of the grid."""
    fine_layers = grid.fine_layers or (fine_layer,)
    return [
        (f, la, d, t) for f in fine_layers for la in grid.layers for d in grid.dims for t in grid.transforms
    ]


def _queries(grid: SweepGrid, fine_layer: int) -> Iterator[_Query]:
    """Full depth, then every shallow query layer (below the fine layer) with every map kind."""
    yield _Query()
    for layer in sorted(set(grid.query_layers)):
        if layer < fine_layer:
            for kind in grid.query_maps:
                yield _Query(layer, kind)


def _query_map(sw: _Sweep, query: _Query, layer: int, fine_layer: int, fine_docs: np.ndarray) -> Any:
    """The query map an index with this setting fits (cached per layer pair)."""
    from esrag.index.config import QueryMapKind
    from esrag.index.query import LinearMap, QueryMap

    exact = layer <= query.layer
    if query.kind == "none":
        return QueryMap(QueryMapKind.NONE, query.layer, exact, sw.fine_dim)
    sample = slice(0, sw.base.train_size)
    shallow = sw.layer(sw.doc_layers, query.layer, "document")[sample]

    def fitted(target: str, to_layer: int, vectors: np.ndarray) -> Any:
        key = (target, query.layer, to_layer)
        if key not in sw.maps:
            sw.maps[key] = LinearMap.ridge(shallow, vectors[sample], sw.base.adapter_ridge)
        return sw.maps[key]

    source = None if exact else fitted("source", layer, sw.doc_layers[layer])
    fine = fitted(f"fine{sw.fine_dim}", fine_layer, fine_docs)
    return QueryMap(QueryMapKind.RIDGE, query.layer, exact, sw.fine_dim, source, fine)


def _query_vectors(
    sw: _Sweep, query: _Query, layer: int, fine_layer: int, fine_docs: np.ndarray
) -> tuple[np.ndarray, np.ndarray, float]:
    """(coarse source, fine) query vectors of a setting and the FLOPs of its query map."""
    if not query.layer:
        source = sw.layer(sw.query_layers, layer, "query")
        return source, fine_vectors(sw.layer(sw.query_layers, fine_layer, "query"), sw.fine_dim), 0.0
    qmap = _query_map(sw, query, layer, fine_layer, fine_docs)
    exact = sw.query_layers[layer] if qmap.exact_source else None
    source, fine = qmap.map_vectors(sw.layer(sw.query_layers, query.layer, "query"), exact)
    return source, fine, query_map_flops(query.kind, qmap.exact_source, sw.hidden, sw.hidden, sw.fine_dim)


def _points(
    sw: _Sweep, index: Any, setting: tuple[int, int, int, str], query: _Query, shortlists: Sequence[int]
) -> Iterator[SweepPoint]:
    """One point per shortlist for a built index and a query setting."""
    fine_layer, layer, dim, transform = setting
    source_q, fine_q, map_flops = _query_vectors(sw, query, layer, fine_layer, sw.fine_docs[fine_layer])
    depth = query.layer or max(layer, fine_layer)
    encoder_flops, encoder_ms = sw.encoder(depth)
    ingest_flops, ingest_ms = sw.ingest(max(layer, fine_layer))
    config = index.config
    for shortlist in shortlists:
        size = min(max(shortlist, sw.k), len(sw.doc_ids))
        run, lat = run_mode(
            index,
            source_q,
            fine_q,
            sw.qids,
            mode="cascade",
            k=sw.k,
            shortlist=size,
            timing_queries=sw.timing_queries,
        )
        quality = evaluate_run(run, sw.judged, [sw.metric])[sw.metric]
        extra = evaluate_run(run, sw.judged, ["recall@10", "mrr@10"]) if sw.labelled else {}
        search_flops = map_flops + _search_flops(sw, config, transform, dim, size, sw.fine_dim)
        point = SweepPoint(
            layer,
            dim,
            transform,
            shortlist,
            quality,
            quality / sw.ref_quality if sw.ref_quality > 0 else 0.0,
            percentile(lat, 50),
            search_flops,
            {sw.metric if sw.labelled else f"overlap@{sw.k}": quality, **extra},
            query_layer=query.layer,
            query_map=query.kind,
            fine_layer=fine_layer,
            query_depth=depth,
            encoder_flops=encoder_flops,
            encoder_ms_p50=encoder_ms,
            ingest_flops_per_doc=ingest_flops,
            ingest_ms_per_doc=ingest_ms,
        )
        yield point
        if sw.early_exit and not query.layer and layer < depth:
            yield from _early_exits(sw, index, point, (source_q, fine_q), size, run)


def _search_flops(sw: _Sweep, config: Any, transform: str, dim: int, size: int, fine_dim: int) -> float:
    """Estimated FLOPs of one search of a setting (``fine_dim`` 0: the coarse stage alone)."""
    return cascade_flops(
        index_type=config.index_type,
        n_docs=len(sw.doc_ids),
        transform=transform,
        source_dim=sw.hidden,
        coarse_dim=min(dim, sw.hidden),
        fine_dim=fine_dim,
        shortlist=size,
        nprobe=config.nprobe,
        ef_search=config.ef_search,
    )


def _early_exits(
    sw: _Sweep,
    index: Any,
    point: SweepPoint,
    vectors: tuple[np.ndarray, np.ndarray],
    size: int,
    cascade_run: dict[str, list[str]],
) -> Iterator[SweepPoint]:
    """``point`` with early exit: the margin calibrated for the target and fixed exit rates.

    An exited query costs its pass to the coarse layer and the coarse search; the others the
    whole cascade. Costs (FLOPs and p50 ms) are mixed by the exit rate.
    """
    source_q, fine_q = vectors
    coarse = index.search_embeddings(source_q, None, k=size, mode="coarse")
    scores = np.full((len(sw.qids), size), -np.inf)
    for i, row in enumerate(coarse.scores):
        scores[i, : len(row)] = row
    coarse_run = {q: ids[: sw.k] for q, ids in zip(sw.qids, coarse.ids, strict=True)}
    casc = per_query_quality(cascade_run, sw.judged, sw.metric, sw.qids)
    short = per_query_quality(coarse_run, sw.judged, sw.metric, sw.qids)
    _, lat = run_mode(
        index,
        source_q,
        fine_q,
        sw.qids,
        mode="coarse",
        k=size,
        shortlist=size,
        timing_queries=sw.timing_queries,
    )
    enc_flops, enc_ms = sw.encoder(point.layer)
    coarse_flops = _search_flops(sw, index.config, point.transform, point.dim, size, 0)
    found = exit_points(coarse_margins(scores), casc, short, reference=sw.ref_quality, target=sw.target)
    for ep in found:
        r = ep.exit_rate
        search = r * coarse_flops + (1 - r) * point.flops_per_query
        encoder = r * enc_flops + (1 - r) * point.encoder_flops
        yield replace(
            point,
            quality=ep.quality,
            retention=ep.quality / sw.ref_quality if sw.ref_quality > 0 else 0.0,
            latency_ms_p50=r * percentile(lat, 50) + (1 - r) * point.latency_ms_p50,
            flops_per_query=search,
            encoder_flops=encoder,
            encoder_ms_p50=r * enc_ms + (1 - r) * point.encoder_ms_p50,
            metrics={sw.metric if sw.labelled else f"overlap@{sw.k}": ep.quality},
            exit_margin=ep.margin,
            exit_rate=r,
            exit_calibrated=ep.calibrated,
            exit_saving=1.0 - (search + encoder) / point.end_to_end_flops if point.end_to_end_flops else 0.0,
        )


def _build(sw: _Sweep, setting: tuple[int, int, int, str], skipped: list[str]) -> Any | None:
    """The index of one (fine layer, coarse layer, dim, transform), or ``None`` (and why, in ``skipped``)."""
    from esrag.index import CascadeIndex

    fine_layer, layer, dim, transform = setting
    where = f"{layer}:{dim} {transform}" + (
        f" (fine layer {fine_layer})" if fine_layer != sw.ref_layer else ""
    )
    if transform != "prefix" and min(len(sw.doc_ids), sw.base.train_size) < 2 * dim:
        skipped.append(f"{where} (needs {2 * dim} docs to fit)")
        return None
    config = sw.base.replace(
        coarse_layer=layer, coarse_dim=dim, transform=transform, fine_view=(fine_layer, sw.fine_dim)
    )
    index = CascadeIndex.build_from_embeddings(
        sw.layer(sw.doc_layers, layer, "document"), sw.fine_docs[fine_layer], ids=sw.doc_ids, config=config
    )
    actual = index.transform.kind.value if index.transform is not None else transform
    if actual != transform:
        skipped.append(f"{where} (the index used {actual})")
        return None
    return index


def run_sweep(
    doc_layers: Mapping[int, np.ndarray],
    query_layers: Mapping[int, np.ndarray],
    *,
    doc_ids: Sequence[str],
    qids: Sequence[str],
    fine_view: tuple[int, int],
    grid: SweepGrid,
    qrels: Qrels | None = None,
    base_config: Any = None,
    target: float = 0.99,
    timing_queries: int = 50,
    show_progress_bar: bool | None = None,
    encoder_cost: EncoderCost | None = None,
    cost: str = "flops",
) -> SweepResult:
    """Evaluate every grid point on precomputed per-layer vectors (full width, normalised).

    ``doc_layers``/``query_layers`` must hold every layer the grid names (coarse, fine and
    query layers). With ``qrels``, every query with a relevant judgment must be among
    ``qids``. ``encoder_cost`` (see :func:`~esrag.evaluation.encoder_cost.measure_encoder_cost`)
    adds each setting's encoder pass to its cost; ``cost`` (``"flops"`` or ``"time"``) is what
    the recommendation minimises end to end.
    """
    from esrag._progress import progress
    from esrag.index import CascadeConfig

    if qrels is not None:
        require_judged_queries(qids, qrels)
    fine_layer, fine_dim = fine_view
    hidden = next(iter(doc_layers.values())).shape[1]
    grid.validate(max(max(doc_layers), fine_layer, *grid.fine_layers), hidden)
    base = base_config or CascadeConfig()
    sw = _Sweep(
        doc_layers, query_layers, list(doc_ids), list(qids), fine_dim, base, timing_queries, encoder_cost
    )
    sw.ref_layer = fine_layer
    sw.target, sw.early_exit = target, grid.early_exit
    reference, ref_run = _reference(sw, fine_layer)
    _judge(sw, ref_run, qrels)
    reference.update(quality=sw.ref_quality, label_free=qrels is None)
    for layer in grid.fine_layers or (fine_layer,):
        sw.fine_docs[layer] = fine_vectors(sw.layer(doc_layers, layer, "document"), fine_dim)
    points: list[SweepPoint] = []
    skipped: list[str] = []
    for setting in progress(_settings(grid, fine_layer), desc="sweep", show=show_progress_bar):
        index = _build(sw, setting, skipped)
        if index is not None:
            for query in _queries(grid, setting[0]):
                points.extend(_points(sw, index, setting, query, grid.shortlists))
    if not points:
        raise ValueError(f"no sweep setting could be evaluated; skipped: {'; '.join(skipped)}")
    if skipped:
        log.info("skipped %d settings: %s", len(skipped), "; ".join(skipped))
    front = pareto_front(points, "flops" if cost == "flops" else "time")
    points = [replace(p, pareto=i in front) for i, p in enumerate(points)]
    settings = {
        "grid": asdict(grid),
        "index_type": sw.base.index_type,
        "k": sw.k,
        "timing_queries": min(timing_queries, len(qids)),
        "skipped": skipped,
        "cost": cost,
        "encoder_timed": bool(encoder_cost and encoder_cost.query_ms),
        "encoder_cost": encoder_cost.to_json() if encoder_cost else None,
    }
    name = sw.metric if sw.labelled else f"overlap@{sw.k}"
    return SweepResult(points, reference, name, target, recommend(points, target, cost), settings)


def _judge(sw: _Sweep, ref_run: dict[str, list[str]], qrels: Qrels | None) -> None:
    """Set the judgments, the metric and the reference quality (label-free: the reference run)."""
    if qrels is None:
        sw.judged = {q: dict.fromkeys(ids, 1) for q, ids in ref_run.items() if ids}
        sw.metric, sw.labelled = f"recall@{sw.k}", False
    else:
        sw.judged, sw.metric, sw.labelled = qrels, "ndcg@10", True
    sw.ref_quality = evaluate_run(ref_run, sw.judged, [sw.metric])[sw.metric]
