"""TrainResult: what a finished training run produced."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["TrainResult"]


@dataclass(frozen=True)
class TrainResult:
    """What a finished run produced (also written to ``<output>/esrag_train.json``).

    ``base_eval``: the base model's held-out scores (step 0); ``kept_base``: no trained
    checkpoint beat it, so the output is the base model; ``report``: the closing lines on
    base vs selected; ``settings``: how steps, warmup, max length and evaluation were chosen;
    ``seconds_per_step`` / ``cpu_seconds_per_step``: wall and CPU time of one optimisation
    step (forward, backward, update; no evaluation or checkpoint), this process's steps.
    """

    output: str
    checkpoint_dir: str
    steps: int
    total_steps: int
    train_examples: int
    eval_examples: int
    seconds: float
    cpu_seconds: float
    resumed_from: int | None
    final_loss: float | None
    best_step: int | None
    best_score: float | None
    last_eval: dict[str, float] | None
    history: list[dict[str, Any]]
    base_eval: dict[str, float] | None = None
    kept_base: bool = False
    report: tuple[str, ...] = ()
    settings: tuple[str, ...] = field(default_factory=tuple)
    seconds_per_step: float | None = None
    cpu_seconds_per_step: float | None = None

    def to_json(self) -> dict[str, Any]:
        """Every field, JSON-ready."""
        return asdict(self)

    def summary(self) -> str:
        """One line for the log: steps, rows, time, final loss, best evaluation, output."""
        best = (
            "" if self.best_step is None else (f", best eval {self.best_score:.4f} at step {self.best_step}")
        )
        loss = "n/a" if self.final_loss is None else f"{self.final_loss:.4f}"
        line = (
            f"trained {self.steps}/{self.total_steps} steps on {self.train_examples} rows in "
            f"{self.seconds:.0f}s ({self.cpu_seconds:.0f} CPU-s; final loss {loss}{best}); "
            f"model in {self.output}"
        )
        return "\n".join([line, *self.report])
