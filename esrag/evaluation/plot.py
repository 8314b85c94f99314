"""PNG plot of a sweep: retention against query cost (FLOPs and measured time), Pareto front."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from esrag.evaluation.sweep import SweepResult

__all__ = ["plot_sweep"]

_COLORS = {"prefix": "tab:blue", "pca": "tab:orange", "adapter": "tab:green"}


def _pyplot() -> Any:
    try:
        import matplotlib
    except ImportError as err:
        raise ImportError("plotting a sweep needs matplotlib: pip install esrag[plot]") from err
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_sweep(result: SweepResult, path: str | os.PathLike[str]) -> Path:
    """Write the plot to ``path`` (PNG) and return it."""
    plt = _pyplot()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.8), constrained_layout=True)
    ref = result.reference
    panels = (
        ("flops_per_query", "FLOPs per query (estimated, log scale)", ref["flops_per_query"]),
        ("latency_ms_p50", "search latency p50 per query, ms (measured, log scale)", ref["latency_ms_p50"]),
    )
    for ax, (attr, xlabel, ref_cost) in zip(axes, panels, strict=True):
        for name, color in _COLORS.items():
            pts = [p for p in result.points if p.transform == name]
            if pts:
                ax.scatter(
                    [getattr(p, attr) for p in pts],
                    [p.retention for p in pts],
                    s=[8 + p.shortlist / 10 for p in pts],
                    c=color,
                    alpha=0.7,
                    label=name,
                )
        front = sorted((p for p in result.points if p.pareto), key=lambda p: p.flops_per_query)
        if attr == "flops_per_query" and front:
            ax.step(
                [p.flops_per_query for p in front],
                [p.retention for p in front],
                where="post",
                color="black",
                lw=1,
                label="Pareto front",
            )
        ax.scatter([ref_cost], [1.0], marker="*", s=160, c="red", label="fine-only reference")
        ax.axhline(result.target, ls="--", c="gray", lw=1, label=f"target {result.target:.0%}")
        if result.recommended is not None:
            rec = result.recommended
            ax.scatter(
                [getattr(rec, attr)],
                [rec.retention],
                s=200,
                facecolors="none",
                edgecolors="black",
                lw=2,
                label=f"recommended: {rec.label}",
            )
        ax.set_xscale("log")
        ax.set_xlabel(xlabel)
        ax.set_ylabel(f"retention ({result.quality_metric} / fine-only)")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8, loc="lower right")
    fig.suptitle(
        f"Cascade sweep: {ref['num_docs']} docs, {ref['num_queries']} queries, fine view {ref['fine_view']}"
    )
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
