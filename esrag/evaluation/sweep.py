"""Sweep coarse (layer, dim, transform) × shortlist: quality retention against query cost.

Every setting is compared with the fine-only (exact, full-model) reference on the same
queries. With qrels, quality is nDCG@10 and retention is cascade / fine-only nDCG@10.
Without qrels (label-free), the reference is the fine-only top-10 itself and retention is
the share of it the cascade returns (overlap@10).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from esrag.evaluation.cascade import _percentile, run_mode
from esrag.evaluation.cost import cascade_flops, fine_flops
from esrag.evaluation.metrics import Qrels, evaluate_run, require_judged_queries
from esrag.evaluation.vectors import fine_vectors

__all__ = ["SweepGrid", "SweepPoint", "SweepResult", "pareto_front", "run_sweep"]

log = logging.getLogger(__name__)

TRANSFORMS = ("prefix", "pca", "adapter")


@dataclass(frozen=True)
class SweepGrid:
    """The settings tried: every (layer, dim, transform) with every shortlist."""

    layers: tuple[int, ...]
    dims: tuple[int, ...]
    transforms: tuple[str, ...] = TRANSFORMS
    shortlists: tuple[int, ...] = (50, 100, 200)

    @classmethod
    def default(cls, num_layers: int, hidden: int) -> SweepGrid:
        """Shallow, middle and last layer; about hidden/12, /6 and /3 dims; all transforms."""
        layers = sorted({max(1, num_layers // 3), max(1, num_layers // 2), num_layers})
        dims = sorted({max(2, hidden // f) for f in (12, 6, 3)})
        return cls(tuple(layers), tuple(dims))

    def validate(self, num_layers: int, hidden: int) -> None:
        """Raise ``ValueError`` for a layer or dim outside the model's shape."""
        for layer in self.layers:
            if not 1 <= layer <= num_layers:
                raise ValueError(f"sweep layer {layer} is outside 1..{num_layers}")
        for dim in self.dims:
            if not 1 <= dim <= hidden:
                raise ValueError(f"sweep dim {dim} is outside 1..{hidden}")
        for name in self.transforms:
            if name not in TRANSFORMS:
                raise ValueError(f"sweep transform {name!r} is not one of {', '.join(TRANSFORMS)}")
        for size in self.shortlists:
            if size < 1:
                raise ValueError(f"sweep shortlist {size} must be >= 1")
        if not (self.layers and self.dims and self.transforms and self.shortlists):
            raise ValueError("every sweep axis needs at least one value")


@dataclass(frozen=True)
class SweepPoint:
    """One cascade setting and what it keeps and costs."""

    layer: int
    dim: int
    transform: str
    shortlist: int
    quality: float
    retention: float
    latency_ms_p50: float
    flops_per_query: float
    metrics: dict[str, float] = field(default_factory=dict)
    pareto: bool = False

    @property
    def label(self) -> str:
        """A short label, e.g. ``L2/64 pca s100``."""
        return f"L{self.layer}/{self.dim} {self.transform} s{self.shortlist}"


@dataclass(frozen=True)
class SweepResult:
    """All points, the fine-only reference, and the recommendation for ``target``."""

    points: list[SweepPoint]
    reference: dict[str, Any]
    quality_metric: str
    target: float
    recommended: SweepPoint | None
    settings: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        """The whole sweep as a JSON object."""
        return {
            "quality_metric": self.quality_metric,
            "target_retention": self.target,
            "reference": self.reference,
            "recommended": asdict(self.recommended) if self.recommended else None,
            "settings": self.settings,
            "points": [asdict(p) for p in self.points],
        }

    def to_markdown(self, *, front_only: bool = False) -> str:
        """A table of the points by cost (``front_only``: Pareto front + recommendation)."""
        ref = self.reference
        lines = [
            f"Reference (fine-only, {ref['fine_view']}): {self.quality_metric} = "
            f"{ref['quality']:.4f}, p50 {ref['latency_ms_p50']:.3f} ms, "
            f"{ref['flops_per_query']:.3g} FLOPs/query, {ref['num_queries']} queries, "
            f"{ref['num_docs']} docs. FLOPs leave out the query encoder pass, the same for "
            "every setting (it always runs to the fine layer); latency is one query at a time "
            "on one thread.",
            "",
            f"| layer | dim | transform | shortlist | {self.quality_metric} | retention "
            "| p50 ms | FLOPs/query | cost vs fine | Pareto |",
            "|---:|---:|---|---:|---:|---:|---:|---:|---:|:---:|",
        ]
        shown = [p for p in self.points if not front_only or p.pareto or p == self.recommended]
        for p in sorted(shown, key=lambda p: p.flops_per_query):
            mark = "★" if p == self.recommended else ("●" if p.pareto else "")
            lines.append(
                f"| {p.layer} | {p.dim} | {p.transform} | {p.shortlist} | {p.quality:.4f} | "
                f"{p.retention:.3f} | {p.latency_ms_p50:.3f} | {p.flops_per_query:.3g} | "
                f"{p.flops_per_query / ref['flops_per_query']:.3f} | {mark} |"
            )
        lines.append("")
        if front_only and len(shown) < len(self.points):
            lines.append(
                f"({len(shown)} of {len(self.points)} settings shown: the Pareto front "
                "● and the recommendation ★.)"
            )
        skipped = self.settings.get("skipped") or []
        if skipped:
            lines.append(f"Skipped {len(skipped)} setting(s): {'; '.join(skipped)}.")
        lines.append(self.recommendation_text())
        return "\n".join(lines)

    def recommendation_text(self) -> str:
        """One sentence naming the recommended setting (or the best one when none meets the target)."""
        if self.recommended is None:
            best = max(self.points, key=lambda p: p.retention)
            return (
                f"No setting keeps {self.target:.1%} of the reference; the best is "
                f"{best.label} at {best.retention:.1%}."
            )
        p = self.recommended
        return (
            f"Recommended (cheapest keeping ≥ {self.target:.1%}): coarse layer {p.layer}, "
            f"{p.dim} dims, {p.transform}, shortlist {p.shortlist} — retention "
            f"{p.retention:.1%} at {p.flops_per_query / self.reference['flops_per_query']:.1%}"
            " of the fine-only FLOPs."
        )


def pareto_front(points: Sequence[SweepPoint], cost: str = "flops") -> set[int]:
    """Indices of points that no other point dominates (cost ≤, retention ≥, one strictly)."""
    key = (lambda p: p.flops_per_query) if cost == "flops" else (lambda p: p.latency_ms_p50)
    front: set[int] = set()
    for i, p in enumerate(points):
        dominated = any(
            key(q) <= key(p) and q.retention >= p.retention and (key(q) < key(p) or q.retention > p.retention)
            for q in points
        )
        if not dominated:
            front.add(i)
    return front


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
) -> SweepResult:
    """Evaluate every grid point on precomputed per-layer vectors (full width, normalised).

    With ``qrels``, every query with a relevant judgment must be among ``qids``.
    """
    from esrag._progress import progress
    from esrag.index import CascadeConfig, CascadeIndex

    if qrels is not None:
        require_judged_queries(qids, qrels)
    fine_layer, fine_dim = fine_view
    hidden = next(iter(doc_layers.values())).shape[1]
    grid.validate(max(max(doc_layers), fine_layer), hidden)
    base = base_config or CascadeConfig()
    n_docs = len(doc_ids)
    fine_docs = fine_vectors(doc_layers[fine_layer], fine_dim)
    fine_q = fine_vectors(query_layers[fine_layer], fine_dim)
    k = min(10, n_docs)
    ref_index = CascadeIndex.build_from_embeddings(
        doc_layers[fine_layer],
        fine_docs,
        ids=list(doc_ids),
        config=base.replace(
            coarse_layer=fine_layer,
            fine_view=fine_view,
            transform="prefix",
            coarse_dim=min(base.coarse_dim, hidden),
            index_type="Flat",
        ),
    )
    ref_run, ref_lat = run_mode(
        ref_index,
        query_layers[fine_layer],
        fine_q,
        qids,
        mode="fine",
        k=k,
        shortlist=k,
        timing_queries=timing_queries,
    )
    if qrels is None:
        name = f"overlap@{k}"
        judged: Qrels = {q: dict.fromkeys(ids, 1) for q, ids in ref_run.items() if ids}
        metric = f"recall@{k}"
    else:
        name = metric = "ndcg@10"
        judged = qrels
    ref_quality = evaluate_run(ref_run, judged, [metric])[metric]
    reference = {
        "quality": ref_quality,
        "fine_view": f"{fine_layer}:{fine_dim}",
        "latency_ms_p50": _percentile(ref_lat, 50),
        "latency_ms_p95": _percentile(ref_lat, 95),
        "flops_per_query": fine_flops(n_docs, fine_dim),
        "num_queries": len(qids),
        "num_docs": n_docs,
        "label_free": qrels is None,
    }
    combos = [(la, d, t) for la in grid.layers for d in grid.dims for t in grid.transforms]
    points: list[SweepPoint] = []
    skipped: list[str] = []
    for layer, dim, transform in progress(combos, desc="sweep", show=show_progress_bar):
        fit_docs = min(n_docs, base.train_size)
        if transform != "prefix" and fit_docs < 2 * dim:
            skipped.append(f"{layer}:{dim} {transform} (needs {2 * dim} docs to fit)")
            continue
        config = base.replace(coarse_layer=layer, coarse_dim=dim, transform=transform, fine_view=fine_view)
        index = CascadeIndex.build_from_embeddings(
            doc_layers[layer], fine_docs, ids=list(doc_ids), config=config
        )
        actual = index.transform.kind.value if index.transform is not None else transform
        if actual != transform:
            skipped.append(f"{layer}:{dim} {transform} (the index used {actual})")
            continue
        for shortlist in grid.shortlists:
            size = min(max(shortlist, k), n_docs)
            run, lat = run_mode(
                index,
                query_layers[layer],
                fine_q,
                qids,
                mode="cascade",
                k=k,
                shortlist=size,
                timing_queries=timing_queries,
            )
            quality = evaluate_run(run, judged, [metric])[metric]
            extra = evaluate_run(run, judged, ["recall@10", "mrr@10"]) if qrels else {}
            points.append(
                SweepPoint(
                    layer,
                    dim,
                    transform,
                    shortlist,
                    quality,
                    quality / ref_quality if ref_quality > 0 else 0.0,
                    _percentile(lat, 50),
                    cascade_flops(
                        index_type=config.index_type,
                        n_docs=n_docs,
                        transform=transform,
                        source_dim=hidden,
                        coarse_dim=min(dim, hidden),
                        fine_dim=fine_dim,
                        shortlist=size,
                        nprobe=config.nprobe,
                        ef_search=config.ef_search,
                    ),
                    {metric if qrels else name: quality, **extra},
                )
            )
    front = pareto_front(points)
    points = [_with(p, pareto=i in front) for i, p in enumerate(points)]
    keep = [p for p in points if p.retention >= target]
    recommended = min(keep, key=lambda p: (p.flops_per_query, p.latency_ms_p50)) if keep else None
    if not points:
        raise ValueError(f"no sweep setting could be evaluated; skipped: {'; '.join(skipped)}")
    if skipped:
        log.info("skipped %d settings: %s", len(skipped), "; ".join(skipped))
    settings = {
        "grid": asdict(grid),
        "index_type": base.index_type,
        "k": k,
        "timing_queries": min(timing_queries, len(qids)),
        "skipped": skipped,
    }
    return SweepResult(points, reference, name, target, recommended, settings)


def _with(point: SweepPoint, **changes: Any) -> SweepPoint:
    from dataclasses import replace

    return replace(point, **changes)
