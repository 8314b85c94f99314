"""PNG plot of a sweep: retention against end-to-end query cost (estimated FLOPs, measured time),
Pareto front, fine-only reference and recommendation. Colour: transform; marker: query layer.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

from esrag.evaluation.sweep_result import SweepResult

__all__ = ["plot_sweep"]

_COLORS = {"prefix": "tab:blue", "pca": "tab:orange", "adapter": "tab:green"}
_MARKERS = "o^sDvP*X"


def _pyplot() -> Any:
    try:
        import matplotlib
    except ImportError as err:
        raise ImportError("plotting a sweep needs matplotlib: pip install esrag[plot]") from err
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _engineering(value: float, unit: str) -> str:
    for scale, prefix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if value >= scale:
            return f"{value / scale:g}{prefix}{unit}"
    return f"{value:g}{unit}"


def _nice_ticks(low: float, high: float, count: int = 6) -> list[float]:
    """At most about ``count`` round values (1, 2, 5 × 10^n) spanning [low, high] on a log axis."""
    low, high = max(low, 1e-12), max(high, low * 1.0001)
    candidates = sorted(
        m * 10.0**e
        for e in range(math.floor(math.log10(low)) - 1, math.ceil(math.log10(high)) + 2)
        for m in (1, 2, 5)
    )
    inside = [t for t in candidates if low <= t <= high] or [low]
    step = max(1, math.ceil(len(inside) / count))
    return inside[::step]


def _axis(ax: Any, values: list[float], unit: str) -> None:
    """Log x axis with a few readable labels (no overlapping minor-tick labels)."""
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullFormatter, NullLocator

    low, high = min(values) / 1.3, max(values) * 1.3
    ax.set_xscale("log")
    ax.set_xlim(low, high)
    ax.xaxis.set_major_locator(FixedLocator(_nice_ticks(low, high)))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _pos: _engineering(v, unit)))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.xaxis.set_minor_formatter(NullFormatter())


def _panel(ax: Any, result: SweepResult, cost: str, xlabel: str, unit: str) -> None:
    ref = result.reference
    value = (lambda p: p.end_to_end_flops) if cost == "flops" else (lambda p: p.end_to_end_ms)
    ref_cost = ref["end_to_end_flops"] if cost == "flops" else ref["end_to_end_ms_p50"]
    depths = sorted({p.query_layer for p in result.points})
    for name, color in _COLORS.items():
        for depth in depths:
            pts = [p for p in result.points if p.transform == name and p.query_layer == depth]
            if pts:
                label = name if depth == 0 else f"{name}, query L{depth} {pts[0].query_map}"
                ax.scatter(
                    [value(p) for p in pts],
                    [p.retention for p in pts],
                    s=[8 + p.shortlist / 10 for p in pts],
                    c=color,
                    marker=_MARKERS[depths.index(depth) % len(_MARKERS)],
                    alpha=0.7,
                    label=label,
                )
    front = sorted((p for p in result.points if p.pareto), key=value)
    if front and cost == result.settings.get("cost", "flops"):
        ax.step(
            [value(p) for p in front],
            [p.retention for p in front],
            where="post",
            color="black",
            lw=1,
            label="Pareto front",
        )
    ax.scatter([ref_cost], [1.0], marker="*", s=160, c="red", label="fine-only reference (full depth)")
    ax.axhline(result.target, ls="--", c="gray", lw=1, label=f"target {result.target:.0%}")
    if result.recommended is not None:
        rec = result.recommended
        ax.scatter(
            [value(rec)],
            [rec.retention],
            s=200,
            facecolors="none",
            edgecolors="black",
            lw=2,
            label=f"recommended: {rec.label}",
        )
    _axis(ax, [value(p) for p in result.points] + [ref_cost], unit)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(f"retention ({result.quality_metric} / fine-only)")
    ax.grid(alpha=0.3, which="major")


def plot_sweep(result: SweepResult, path: str | os.PathLike[str]) -> Path:
    """Write the plot to ``path`` (PNG) and return it."""
    plt = _pyplot()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, axes = plt.subplots(1, 2, figsize=(13, 5.2), constrained_layout=True)
    timed = result.settings.get("encoder_timed", False)
    _panel(axes[0], result, "flops", "end-to-end FLOPs per query: encoder pass + search (estimated, log)", "")
    _panel(
        axes[1],
        result,
        "time",
        "end-to-end p50 per query, ms: encoder pass"
        + (" + " if timed else " (not timed) + ")
        + "search (measured, log)",
        " ms",
    )
    axes[0].legend(fontsize=7, loc="lower right")
    ref = result.reference
    fig.suptitle(
        f"Cascade sweep: {ref['num_docs']} docs, {ref['num_queries']} queries, fine view {ref['fine_view']}"
    )
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
