"""The state of one training run while :class:`~esrag.train.trainer.Trainer` drives it.

:class:`Run` holds what a run is made of once set up (data, plan, encoder, optimizer, ...);
its one mutable part, :class:`Progress`, is what the steps advance (step, history, best,
last evaluation, running loss, the state at the last step boundary). Only the Trainer's
steps write to it. A checkpoint is the :class:`~esrag.train.checkpoint.TrainState` that
:meth:`Run.train_state` builds; :func:`restore` and :meth:`Progress.start` read one back.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from esrag.encoder import EspressoEncoder, View
from esrag.train.batching import BatchPlan
from esrag.train.checkpoint import Best, RngState, TrainState
from esrag.train.config import TrainConfig
from esrag.train.defaults import Settings
from esrag.train.holdout import Slice
from esrag.train.losses import CompressLoss
from esrag.train.result import TrainResult
from esrag.train.selection import Selection, Verdict

__all__ = ["Progress", "Run", "Snapshot", "restore"]


@dataclass(frozen=True)
class Snapshot:
    """The state a forward pass changes mid-step: torch's RNG (dropout) and the running PCA."""

    rng: RngState
    pca: dict[str, torch.Tensor]

    @classmethod
    def take(cls, compress: CompressLoss | None) -> Snapshot:
        """The state now (PCA tensors stay on their device; updates replace, never modify them)."""
        pca = compress.pca_state(to_cpu=False) if compress is not None else {}
        return cls(RngState.capture(), pca)


@dataclass
class Progress:
    """How far a run got: the part of a run the steps change.

    ``boundary`` is the :class:`Snapshot` at the end of step ``step``; ``updating`` is True
    from a step's optimizer update until its evaluation and checkpoint are done, when the
    live state cannot be saved as step ``step`` (an interrupt then keeps the previous
    checkpoint). ``selection`` is held-out selection's state (its ``best`` is ``best``'s
    evaluation with per-item values).
    """

    step: int
    history: list[dict[str, Any]]
    best: Best | None
    last_eval: dict[str, float] | None
    final_loss: float | None
    boundary: Snapshot
    running: float | None = None
    updating: bool = False
    selection: Selection = field(default_factory=Selection)
    step_seconds: float = 0.0  # wall time inside optimisation steps, this process only
    step_cpu_seconds: float = 0.0  # CPU time inside optimisation steps, this process only
    steps_timed: int = 0

    @classmethod
    def start(cls, saved: TrainState | None, compress: CompressLoss | None) -> Progress:
        """Where a run starts: step 0, or where the checkpoint ``saved`` left off."""
        boundary = Snapshot.take(compress)
        if saved is None:
            return cls(step=0, history=[], best=None, last_eval=None, final_loss=None, boundary=boundary)
        return cls(
            step=saved.step,
            history=list(saved.history),
            best=saved.best,
            last_eval=saved.last_eval,
            final_loss=saved.last_loss,
            boundary=boundary,
            selection=saved.selection,
        )


@dataclass(frozen=True)
class Run:
    """One run once set up: what it trains on, with what, for how long, and its progress."""

    encoder: EspressoEncoder
    plan: BatchPlan
    slices: list[Slice]
    views: list[View]
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    compress: CompressLoss | None
    params: list[torch.nn.Parameter]
    total: int
    train_examples: int
    eval_examples: int
    resumed_from: int | None
    started: float  # time.perf_counter() at the start of fit()
    cpu_started: float  # time.process_time() at the start of fit()
    progress: Progress
    settings: Settings
    holdout: tuple[str, ...] = ()
    negatives: dict[str, list[int]] = field(default_factory=dict)
    query_views: tuple[View, ...] = ()  # shallow query views scored against the full view

    def train_state(self, config: TrainConfig, snapshot: Snapshot | None = None) -> TrainState:
        """The checkpoint of this run as it stands (RNG and PCA from ``snapshot``, else now)."""
        snap = Snapshot.take(self.compress) if snapshot is None else snapshot
        p = self.progress
        return TrainState(
            step=p.step,
            total_steps=self.total,
            config=config,
            history=tuple(p.history),
            best=p.best,
            last_eval=p.last_eval,
            optimizer=self.optimizer.state_dict(),
            scheduler=self.scheduler.state_dict(),
            scaler=self.scaler.state_dict(),
            rng=snap.rng,
            pca=snap.pca,
            selection=p.selection,
            holdout=self.holdout,
            negatives=self.negatives,
        )

    def result(self, output: str, checkpoint_dir: Path, verdict: Verdict | None = None) -> TrainResult:
        """What the run produced so far (its times measured up to now; ``verdict``: selection's)."""
        p = self.progress
        base = p.selection.base
        return TrainResult(
            output=output,
            checkpoint_dir=str(checkpoint_dir),
            steps=p.step,
            total_steps=self.total,
            train_examples=self.train_examples,
            eval_examples=self.eval_examples,
            seconds=time.perf_counter() - self.started,
            cpu_seconds=time.process_time() - self.cpu_started,
            resumed_from=self.resumed_from,
            final_loss=p.final_loss,
            best_step=None if p.best is None else p.best.step,
            best_score=None if p.best is None else p.best.score,
            last_eval=p.last_eval,
            history=p.history,
            base_eval=None if base is None else base.scores,
            kept_base=verdict is not None and verdict.kept_base,
            report=() if verdict is None else verdict.lines,
            settings=self.settings.lines,
            seconds_per_step=p.step_seconds / p.steps_timed if p.steps_timed else None,
            cpu_seconds_per_step=p.step_cpu_seconds / p.steps_timed if p.steps_timed else None,
        )


def restore(
    saved: TrainState,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    scaler: torch.amp.GradScaler,
    compress: CompressLoss | None,
) -> None:
    """Put the optimizer, schedule, scaler, running PCA and torch RNG back as ``saved`` has them."""
    optimizer.load_state_dict(saved.optimizer)
    scheduler.load_state_dict(saved.scheduler)
    if saved.scaler is not None:
        scaler.load_state_dict(saved.scaler)
    if compress is not None:
        compress.load_pca_state(saved.pca)
    saved.rng.restore()
