"""The values of a sweep: its grid, its points (what each setting keeps and costs end to end), the
result with its recommendation, and the Pareto front. :mod:`esrag.evaluation.sweep` fills them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["COSTS", "QUERY_MAPS", "TRANSFORMS", "SweepGrid", "SweepPoint", "SweepResult", "pareto_front"]

TRANSFORMS = ("prefix", "pca", "adapter")
QUERY_MAPS = ("ridge", "none")
COSTS = ("flops", "time")
"""What the recommendation minimises: end-to-end FLOPs (ties: time) or measured time (ties: FLOPs)."""


@dataclass(frozen=True)
class SweepGrid:
    """The settings tried: every (layer, dim, transform) with every shortlist, for every fine
    (document) layer and query layer.

    ``query_layers`` empty: queries run full depth only; a query layer below a fine layer is
    a shallow query, tried with each of ``query_maps``. ``fine_layers`` empty: the index's
    fine layer only. ``early_exit``: every full-depth setting whose coarse layer is shallower
    than the pass is also tried with early exit, at the margin calibrated for the target and
    at fixed exit rates (:mod:`esrag.evaluation.exit_calibration`).
    """

    layers: tuple[int, ...]
    dims: tuple[int, ...]
    transforms: tuple[str, ...] = TRANSFORMS
    shortlists: tuple[int, ...] = (50, 100, 200)
    query_layers: tuple[int, ...] = ()
    fine_layers: tuple[int, ...] = ()
    query_maps: tuple[str, ...] = ("ridge",)
    early_exit: bool = False

    @classmethod
    def default(cls, num_layers: int, hidden: int) -> SweepGrid:
        """Shallow, middle and last layer; about hidden/12, /6 and /3 dims; all transforms."""
        layers = sorted({max(1, num_layers // 3), max(1, num_layers // 2), num_layers})
        dims = sorted({max(2, hidden // f) for f in (12, 6, 3)})
        return cls(tuple(layers), tuple(dims))

    def validate(self, num_layers: int, hidden: int) -> None:
        """Raise ``ValueError`` for a layer or dim outside the model's shape."""
        for name, values in (
            ("layer", self.layers),
            ("query layer", self.query_layers),
            ("fine layer", self.fine_layers),
        ):
            for layer in values:
                if not 1 <= layer <= num_layers:
                    raise ValueError(f"sweep {name} {layer} is outside 1..{num_layers}")
        for dim in self.dims:
            if not 1 <= dim <= hidden:
                raise ValueError(f"sweep dim {dim} is outside 1..{hidden}")
        for what, names, known in (
            ("transform", self.transforms, TRANSFORMS),
            ("query map", self.query_maps, QUERY_MAPS),
        ):
            for name in names:
                if name not in known:
                    raise ValueError(f"sweep {what} {name!r} is not one of {', '.join(known)}")
        for size in self.shortlists:
            if size < 1:
                raise ValueError(f"sweep shortlist {size} must be >= 1")
        if not (self.layers and self.dims and self.transforms and self.shortlists and self.query_maps):
            raise ValueError("every sweep axis needs at least one value")


@dataclass(frozen=True)
class SweepPoint:
    """One cascade setting and what it keeps and costs.

    ``flops_per_query`` and ``latency_ms_p50`` are the search alone (transform, query map,
    coarse search, rerank); ``encoder_*`` the query's encoder pass to ``query_depth``; the
    ``end_to_end_*`` properties their sums. ``ingest_*`` is one document's pass to the deepest
    layer the documents need (max of the coarse and the fine layer).
    """

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
    query_layer: int = 0
    """Layer the query's pass stops at for a shallow query; 0: full depth."""
    query_map: str = ""
    """``ridge``/``none`` for a shallow query, else empty."""
    fine_layer: int = 0
    """The documents' fine layer (0: not recorded)."""
    query_depth: int = 0
    """The deepest layer the query's encoder pass runs (0: unknown)."""
    encoder_flops: float = 0.0
    encoder_ms_p50: float = 0.0
    ingest_flops_per_doc: float = 0.0
    ingest_ms_per_doc: float = 0.0
    exit_margin: float | None = None
    """The early-exit margin of this point (``None``: no early exit)."""
    exit_rate: float = 0.0
    """Share of the queries that exit (answered from the coarse shortlist, pass to its layer)."""
    exit_calibrated: bool = False
    """Whether :attr:`exit_margin` is the one calibrated for the sweep's target."""
    exit_saving: float = 0.0
    """End-to-end cost saved against the same setting without early exit (share, by FLOPs)."""

    @property
    def end_to_end_flops(self) -> float:
        """Encoder pass + search, FLOPs per query."""
        return self.encoder_flops + self.flops_per_query

    @property
    def end_to_end_ms(self) -> float:
        """Encoder pass p50 + search p50, milliseconds per query."""
        return self.encoder_ms_p50 + self.latency_ms_p50

    @property
    def label(self) -> str:
        """A short label, e.g. ``L2/64 pca s100`` (``q2 ridge`` for a shallow query, ``f4`` for
        a fine layer other than the last).
        """
        extra = f" q{self.query_layer} {self.query_map}" if self.query_layer else ""
        if self.exit_margin is not None:
            extra += f" exit≥{self.exit_margin:.3g} ({self.exit_rate:.0%})"
        return f"L{self.layer}/{self.dim} {self.transform} s{self.shortlist}{extra}"

    def to_json(self) -> dict[str, Any]:
        """Every field plus the end-to-end sums."""
        return {
            **asdict(self),
            "end_to_end_flops": self.end_to_end_flops,
            "end_to_end_ms_p50": self.end_to_end_ms,
        }


def _cost_key(cost: str) -> Any:
    if cost not in COSTS:
        raise ValueError(f"cost must be one of {', '.join(COSTS)}, got {cost!r}")
    if cost == "flops":
        return lambda p: (p.end_to_end_flops, p.end_to_end_ms)
    return lambda p: (p.end_to_end_ms, p.end_to_end_flops)


def pareto_front(points: Sequence[SweepPoint], cost: str = "flops") -> set[int]:
    """Indices of points that no other point dominates (end-to-end cost ≤, retention ≥, one
    strictly); ``cost``: ``"flops"`` or anything else for measured time.
    """
    key = (lambda p: p.end_to_end_flops) if cost == "flops" else (lambda p: p.end_to_end_ms)
    front: set[int] = set()
    for i, p in enumerate(points):
        dominated = any(
            key(q) <= key(p) and q.retention >= p.retention and (key(q) < key(p) or q.retention > p.retention)
            for q in points
        )
        if not dominated:
            front.add(i)
    return front


def recommend(points: Sequence[SweepPoint], target: float, cost: str = "flops") -> SweepPoint | None:
    """The cheapest point end to end (by ``cost``) keeping ``target`` retention, or ``None``."""
    key = _cost_key(cost)
    keep = [p for p in points if p.retention >= target]
    return min(keep, key=key) if keep else None


def _human(value: float, unit: str = "") -> str:
    """``1.2G``-style engineering notation."""
    for scale, prefix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= scale:
            return f"{value / scale:.3g}{prefix}{unit}"
    return f"{value:.3g}{unit}"


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
            "recommended": self.recommended.to_json() if self.recommended else None,
            "settings": self.settings,
            "points": [p.to_json() for p in self.points],
        }

    def _header(self) -> str:
        ref = self.reference
        timed = "measured on this machine" if self.settings.get("encoder_timed") else "not timed"
        return (
            f"Reference (fine-only, {ref['fine_view']}): {self.quality_metric} = "
            f"{ref['quality']:.4f}, end to end p50 {ref['end_to_end_ms_p50']:.3f} ms "
            f"(encoder {ref['encoder_ms_p50']:.3f} + search {ref['latency_ms_p50']:.3f}), "
            f"{_human(ref['end_to_end_flops'])} FLOPs/query, {ref['num_queries']} queries, "
            f"{ref['num_docs']} docs. End to end = the query's encoder pass to the deepest layer "
            f"it needs ({timed}; one query at a time) + the search (one query at a time, one "
            "thread); ingest = one document's pass to the deepest layer documents need."
        )

    def to_markdown(self, *, front_only: bool = False) -> str:
        """A table of the points by end-to-end cost (``front_only``: Pareto front + recommendation)."""
        ref_flops = self.reference["end_to_end_flops"] or 1.0
        lines = [
            self._header(),
            "",
            f"| layer | dim | transform | shortlist | {self.quality_metric} | retention | query | fine "
            "| p50 ms end to end | FLOPs/query end to end | cost vs fine | ingest FLOPs/doc | Pareto |",
            "|---:|---:|---|---:|---:|---:|---|---:|---:|---:|---:|---:|:---:|",
        ]
        shown = [p for p in self.points if not front_only or p.pareto or p == self.recommended]
        for p in sorted(shown, key=lambda p: p.end_to_end_flops):
            mark = "★" if p == self.recommended else ("●" if p.pareto else "")
            query = f"L{p.query_layer} {p.query_map}" if p.query_layer else "full"
            if p.exit_margin is not None:
                query += f", exit ≥ {p.exit_margin:.3g} ({p.exit_rate:.0%} exit, −{p.exit_saving:.0%})"
            lines.append(
                f"| {p.layer} | {p.dim} | {p.transform} | {p.shortlist} | {p.quality:.4f} | "
                f"{p.retention:.3f} | {query} | {p.fine_layer or '-'} | {p.end_to_end_ms:.3f} | "
                f"{_human(p.end_to_end_flops)} | {p.end_to_end_flops / ref_flops:.3f} | "
                f"{_human(p.ingest_flops_per_doc)} | {mark} |"
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
        if not any(p.query_layer for p in self.points):
            lines.append(
                "Queries ran full depth; add shallow query layers (--query-layers) to try cutting it."
            )
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
        p, ref = self.recommended, self.reference
        query = (
            f"queries to layer {p.query_layer} ({p.query_map} map)" if p.query_layer else "full-depth queries"
        )
        fine = f", fine layer {p.fine_layer}" if p.fine_layer else ""
        if p.exit_margin is not None:
            fine += (
                f", early exit at margin {p.exit_margin:.4g} ({p.exit_rate:.1%} of queries exit, "
                f"saving {p.exit_saving:.1%} of the same cascade's end-to-end FLOPs)"
            )
        share = p.end_to_end_flops / ref["end_to_end_flops"] if ref["end_to_end_flops"] else 0.0
        by = "measured time" if self.settings.get("cost") == "time" else "FLOPs"
        return (
            f"Recommended (cheapest end to end by {by} keeping ≥ {self.target:.1%}): coarse layer "
            f"{p.layer}, {p.dim} dims, {p.transform}, shortlist {p.shortlist}, {query}{fine} — "
            f"retention {p.retention:.1%} at {share:.1%} of the fine-only reference's end-to-end "
            f"FLOPs (p50 {p.end_to_end_ms:.2f} ms vs {ref['end_to_end_ms_p50']:.2f} ms); ingest "
            f"{_human(p.ingest_flops_per_doc)} FLOPs, {p.ingest_ms_per_doc:.2f} ms per document."
        )
