"""Checkpoint selection on the held-out slice: the declared rule, early stopping, the verdict.

The rule (applied online, one evaluation at a time; step 0 is the base model):

1. **Eligible**: a checkpoint whose full-view score is not below the base model's, nor below
   the best full-view score seen so far, beyond noise. Noise is one standard error of the
   paired difference between the two models compared (per held-out query, or a bootstrap for
   scored pairs: :func:`esrag.train.evaluate.paired_noise`), so a larger or more consistent
   slice tolerates less.
2. **Best**: among eligible checkpoints, the one with the best shallow-view score (the mean
   of the ``eval_views`` other than the full view; the same full view, so the best
   retention); without shallow views, the best full-view score. Ties keep the earlier.
3. **Early stopping**: an evaluation that neither becomes the best nor raises the best
   full-view score is stale; ``early_stopping`` stale evaluations in a row end the run.

Only the current best checkpoint is kept on disk, so a checkpoint that was passed over is
never reconsidered. If no trained checkpoint is eligible and better, the base model (step
0) stays the best and the output keeps its full-depth quality; :func:`verdict` says so.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

__all__ = ["Evaluated", "Noise", "Selection", "Verdict", "choose", "no_noise", "verdict"]

Items = dict[str, list[float]]
Noise = Callable[[Items, Items], float]


def no_noise(_a: Items, _b: Items) -> float:
    """A :data:`Noise` for evaluations without per-item values: no tolerance."""
    return 0.0


@dataclass(frozen=True)
class Evaluated:
    """One evaluation: its step, its scores (``full``, ``shallow``, per view) and per-item values."""

    step: int
    scores: dict[str, float]
    items: Items = field(default_factory=dict)

    @property
    def full(self) -> float:
        """The full view's score (``score`` for results that only have one number)."""
        return float(self.scores.get("full", self.scores["score"]))

    @property
    def shallow(self) -> float | None:
        """The mean shallow-view score, if any was measured."""
        value = self.scores.get("shallow")
        return None if value is None else float(value)

    def to_json(self) -> dict[str, Any]:
        """``{"step", "scores", "items"}``."""
        return {
            "step": self.step,
            "scores": dict(self.scores),
            "items": {k: list(v) for k, v in self.items.items()},
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Evaluated:
        """Inverse of :meth:`to_json`."""
        items = {str(k): [float(x) for x in v] for k, v in (data.get("items") or {}).items()}
        return cls(int(data["step"]), {str(k): float(v) for k, v in data["scores"].items()}, items)


@dataclass(frozen=True)
class Selection:
    """Where selection stands: the base (step 0), the best full view seen, the chosen best,
    the best trained (step > 0) full view, and how many evaluations in a row were stale.
    """

    base: Evaluated | None = None
    top: Evaluated | None = None
    best: Evaluated | None = None
    best_trained: Evaluated | None = None
    stale: int = 0

    def to_json(self) -> dict[str, Any]:
        """A JSON object (None for missing evaluations)."""
        out: dict[str, Any] = {"stale": self.stale}
        for name in ("base", "top", "best", "best_trained"):
            value = getattr(self, name)
            out[name] = None if value is None else value.to_json()
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | None) -> Selection:
        """Inverse of :meth:`to_json` (None or ``{}``: nothing evaluated yet)."""
        if not data:
            return cls()

        def read(name: str) -> Evaluated | None:
            value = data.get(name)
            return None if value is None else Evaluated.from_json(value)

        return cls(read("base"), read("top"), read("best"), read("best_trained"), int(data.get("stale", 0)))


def _eligible(item: Evaluated, reference: Evaluated | None, noise: Noise) -> bool:
    return reference is None or item.full >= reference.full - noise(item.items, reference.items)


def choose(selection: Selection, candidate: Evaluated, noise: Noise = no_noise) -> tuple[Selection, bool]:
    """Apply the rule to a new evaluation: (the selection after it, whether it is the new best)."""
    if selection.best is None:
        base = selection.base if selection.base is not None or candidate.step != 0 else candidate
        trained = candidate if candidate.step > 0 else None
        return Selection(base, candidate, candidate, trained, 0), True
    top = selection.top or selection.best
    raised = candidate.full > top.full
    new_top = candidate if raised else top
    trained = selection.best_trained
    if candidate.step > 0 and (trained is None or candidate.full > trained.full):
        trained = candidate
    fits = _eligible(candidate, selection.base, noise) and _eligible(candidate, new_top, noise)
    best = selection.best
    keeps = _eligible(best, selection.base, noise) and _eligible(best, new_top, noise)
    if not fits:
        chosen = False
    elif not keeps:
        chosen = True
    elif candidate.shallow is not None and best.shallow is not None:
        chosen = candidate.shallow > best.shallow
    else:
        chosen = candidate.full > best.full
    stale = 0 if chosen or raised else selection.stale + 1
    after = replace(
        selection, top=new_top, best=candidate if chosen else best, best_trained=trained, stale=stale
    )
    return after, chosen


@dataclass(frozen=True)
class Verdict:
    """The closing report: whether the output is the base model, and lines that say so."""

    kept_base: bool
    lines: tuple[str, ...]


def _views(item: Evaluated) -> str:
    shallow = item.shallow
    if shallow is None:
        return f"full {item.full:.4f}"
    retention = shallow / item.full if item.full else 0.0
    return f"full {item.full:.4f}, shallow {shallow:.4f} ({retention:.1%} of full)"


def verdict(selection: Selection, noise: Noise = no_noise) -> Verdict:
    """Base vs selected on the held-out slice, and a plain warning when training did not help."""
    base, best, trained = selection.base, selection.best, selection.best_trained
    if best is None:
        return Verdict(False, ())
    if base is None:  # a run resumed from a checkpoint written before base scores were kept
        return Verdict(False, (f"held-out slice: selected step {best.step}: {_views(best)}",))
    lines = [f"held-out slice, base model (step 0): {_views(base)}"]
    if best.step == 0:
        if trained is None:
            lines.append("no trained checkpoint was evaluated; the output is the base model")
            return Verdict(True, tuple(lines))
        diff = trained.full - base.full
        lines.append(
            f"WARNING: training did not beat the base model on the held-out slice: the best trained "
            f"checkpoint (step {trained.step}) has {_views(trained)}, full view {diff:+.4f} "
            f"(± {noise(trained.items, base.items):.4f} s.e.) against the base. The output is the "
            "base model, unchanged: it keeps the base model's full-depth quality"
        )
        return Verdict(True, tuple(lines))
    diff = best.full - base.full
    lines.append(
        f"held-out slice, selected step {best.step}: {_views(best)}; full view {diff:+.4f} "
        f"(± {noise(best.items, base.items):.4f} s.e.) against the base"
    )
    return Verdict(False, tuple(lines))
