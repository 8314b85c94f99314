"""The ESE training loop: AdamW, warmup, accumulation, AMP, evaluation, checkpoints, resume."""

from __future__ import annotations

import contextlib
import functools
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from esrag._progress import progress
from esrag.encoder import EspressoEncoder
from esrag.train import checkpoint as ckpt
from esrag.train.batching import Batch, false_negative_mask
from esrag.train.checkpoint import Best, TrainState
from esrag.train.config import TrainConfig
from esrag.train.data import check_training_sources, load_sources
from esrag.train.defaults import encoding_length
from esrag.train.evaluate import paired_noise, score_slices
from esrag.train.folders import check_checkpoint_dir, check_output, write_output
from esrag.train.loop import Progress, Run, Snapshot, restore
from esrag.train.losses import CompressLoss, ESELoss, LossOutput, PairEmbeddings, ShallowQueryLoss
from esrag.train.losses.base import float32_region
from esrag.train.objective import (
    autocast_dtype,
    build_losses,
    build_optimizer,
    build_query_loss,
    eval_views,
    query_views,
    set_activation_checkpointing,
    trained_layers,
)
from esrag.train.prepare import prepare
from esrag.train.result import TrainResult
from esrag.train.selection import Evaluated, Noise, choose, no_noise, verdict

__all__ = ["StepCallback", "TrainResult", "Trainer", "train"]

logger = logging.getLogger(__name__)

StepCallback = Callable[[int, dict[str, float]], None]


def train(config: TrainConfig, *, on_step: StepCallback | None = None) -> TrainResult:
    """Run (or resume) the training described by ``config``; see :class:`Trainer`."""
    return Trainer(config, on_step=on_step).fit()


class Trainer:
    """Fine-tunes an :class:`EspressoEncoder` with the ESE objective.

    ``fit()`` loads the data, resumes from ``<checkpoint_dir>``'s newest checkpoint when
    there is one (and ``config.resume``), trains to ``total_steps``, evaluates every
    ``eval_every`` steps on the held-out split (keeping the best model in
    ``<checkpoint_dir>/best``), checkpoints every ``save_every`` steps, and finally writes
    the best (with evaluation) or last model to ``config.output`` atomically.

    Reproducible: data order depends only on (seed, epoch); dropout's torch RNG state is
    seeded and saved in every checkpoint, with the optimizer, scheduler, grad scaler and
    running PCA, so a resumed run continues exactly as the uninterrupted one would (bitwise
    on CPU). ``on_step(step, parts)`` is called after each optimizer step and checkpoint.

    Embeddings are computed under autocast (bf16/fp16 on CUDA when ``precision`` asks for
    it); the loss itself always runs in float32 with autocast off. On KeyboardInterrupt
    the last finished step is checkpointed (atomically) before the interrupt propagates,
    unless it fell inside an optimizer update or a step's evaluation/checkpoint (then the
    previous checkpoint stands). ``config.output`` is only ever replaced when it is empty
    or an esrag encoder folder, and ``resume=False`` only deletes a checkpoint folder that
    holds nothing but esrag checkpoints.

    ``fit()`` is a short driver over named steps: :meth:`_setup` builds a
    :class:`~esrag.train.loop.Run`; :meth:`_train_step` is one optimisation step;
    :meth:`_end_step` logs, evaluates (:meth:`_evaluate`), selects the best
    (:meth:`_select`) and checkpoints (:meth:`_checkpoint`); :meth:`_done` decides when to
    stop; :meth:`_on_interrupt` and :meth:`_finish` close the run.
    """

    layers: list[int]  # the layers in the ESE loss; set by _setup()
    infonce: ESELoss  # the loss of pair batches; set by _setup()
    cosent: ESELoss  # the loss of scored batches; set by _setup()

    def __init__(self, config: TrainConfig, *, on_step: StepCallback | None = None) -> None:
        """A trainer for ``config``; ``on_step(step, parts)`` is called after every step."""
        if not isinstance(config, TrainConfig):
            raise TypeError(f"config must be a TrainConfig, got {type(config).__name__}")
        self.config = config
        self.on_step = on_step
        self.checkpoint_dir = Path(config.checkpoint_dir or f"{config.output}-checkpoints")
        self._amp_dtype: torch.dtype | None = None  # autocast dtype of the embeddings; set by fit()
        self._max_length: int | None = None  # tokens per text; set by fit() (default the encoder's)
        self._noise: Noise = no_noise  # selection's noise between two evaluations; set by fit()
        self._last_items: dict[str, list[float]] = {}  # per-item values of the last evaluation
        self.query_loss: ShallowQueryLoss | None = None  # the shallow-query terms; set by _setup()

    @property
    def embedded(self) -> list[int]:
        """The layers embedded per batch: the ESE loss's and the query layers, ascending."""
        return sorted({*self.layers, *(self.query_loss.layers if self.query_loss is not None else ())})

    # ------------------------------------------------------------------ the objective
    def _losses(self) -> tuple[ESELoss, ESELoss, CompressLoss | None]:
        return build_losses(self.config)

    def _embed(self, enc: EspressoEncoder, texts: list[str]) -> dict[int, torch.Tensor]:
        max_length = self._max_length or self.config.max_length or enc.max_length
        batch = enc.tokenizer(
            texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt"
        )
        features = {k: v.to(enc.device) for k, v in batch.items()}
        return enc.pooled_layers(features, self.embedded)

    def _loss(self, enc: EspressoEncoder, batch: Batch) -> LossOutput:
        """The batch's loss: embeddings under autocast (if on), the loss in float32."""
        amp = self._amp_dtype
        autocast = torch.autocast(enc.device.type, dtype=amp) if amp is not None else contextlib.nullcontext()
        with autocast:
            anchors = self._embed(enc, batch.anchors)
            positives = self._embed(enc, batch.positives)
            negatives = self._embed(enc, batch.negatives) if batch.negatives is not None else None
        mask = false_negative_mask(
            batch.anchors, batch.positives, related=batch.related, negatives=batch.negatives
        ).to(enc.device)
        scores = None if batch.scores is None else torch.tensor(batch.scores, device=enc.device)
        per_layer = {  # .float(): a no-op for float32 embeddings, a cast for autocast ones
            layer: PairEmbeddings(
                anchors[layer].float(),
                positives[layer].float(),
                None if negatives is None else negatives[layer].float(),
                scores,
                mask,
            )
            for layer in self.embedded
        }
        loss = self.cosent if scores is not None else self.infonce
        with float32_region(enc.device):
            out = loss({layer: per_layer[layer] for layer in self.layers})
            if self.query_loss is None:
                return out
            query, parts = self.query_loss(per_layer)
            total = out.loss + query
            return LossOutput(total, {**out.parts, **parts, "loss": float(total.detach())})

    # ------------------------------------------------------------------ the driver
    def fit(self) -> TrainResult:
        """Train (or resume) to the end, write ``config.output`` and return the result."""
        run = self._setup()
        self._begin(run)
        bar = progress(total=run.total, desc="ESE training", show=self.config.show_progress, unit="step")
        bar.update(run.progress.step)
        try:
            while not self._done(run):
                parts = self._train_step(run)
                bar.update(1)
                bar.set_postfix(loss=f"{run.progress.running:.4f}")
                self._end_step(run, parts)
        except KeyboardInterrupt:
            self._on_interrupt(run)
            raise
        finally:
            bar.close()
        return self._finish(run)

    # ------------------------------------------------------------------ setup
    def _setup(self) -> Run:
        """Check the folders, load and split the data, build model, losses and optimizer, resume."""
        cfg = self.config
        started, cpu_started = time.perf_counter(), time.process_time()
        check_output(Path(cfg.output))
        check_checkpoint_dir(self.checkpoint_dir, resume=cfg.resume)
        loaded = load_sources(cfg)
        check_training_sources(loaded[0])
        resume_from, saved = self._resume_point()
        enc = self._encoder(resume_from)
        self.layers = trained_layers(cfg, enc)
        self.query_loss = build_query_loss(cfg, enc)
        views = eval_views(cfg, enc)
        data = prepare(cfg, loaded, enc, saved)
        total = data.settings.total_steps
        self._max_length = data.settings.max_length
        self._noise = functools.partial(paired_noise, data.slices)
        self.infonce, self.cosent, compress = self._losses()
        self.infonce.to(enc.device)
        self.cosent.to(enc.device)
        optimizer, scheduler = build_optimizer(cfg, enc, total, warmup=data.settings.warmup_steps)
        self._amp_dtype = autocast_dtype(cfg.precision, enc.device)
        scaler = torch.amp.GradScaler("cuda", enabled=self._amp_dtype is torch.float16)
        if saved is None:
            torch.manual_seed(cfg.seed)
        else:
            restore(saved, optimizer, scheduler, scaler, compress)
            if saved.best is not None:
                ckpt.repair_best(self.checkpoint_dir, saved.best)
            logger.info("resuming %s from step %d of %d", cfg.output, saved.step, total)
        run = Run(
            encoder=enc,
            plan=data.plan,
            slices=data.slices,
            views=views,
            optimizer=optimizer,
            scheduler=scheduler,
            scaler=scaler,
            compress=compress,
            params=[p for p in enc.model.parameters() if p.requires_grad],
            total=total,
            train_examples=sum(map(len, data.train)),
            eval_examples=sum(map(len, data.slices)),
            resumed_from=None if saved is None else saved.step,
            started=started,
            cpu_started=cpu_started,
            progress=Progress.start(saved, compress),
            settings=data.settings,
            holdout=data.holdout,
            negatives=data.negatives,
            query_views=tuple(query_views(cfg, enc)),
        )
        self._log_start(run)
        return run

    def _resume_point(self) -> tuple[Path | None, TrainState | None]:
        """Start over (deleting our old checkpoints) or read the newest checkpoint."""
        return ckpt.resume_point(self.checkpoint_dir, self.config, check_checkpoint_dir)

    def _encoder(self, resume_from: Path | None) -> EspressoEncoder:
        cfg = self.config
        if resume_from is not None:
            return EspressoEncoder(resume_from / "model", device=cfg.device, dtype=torch.float32)
        return EspressoEncoder(cfg.base, pooling=cfg.pooling, device=cfg.device, dtype=torch.float32)

    def _log_start(self, run: Run) -> None:
        cfg = self.config
        logger.info(
            "ESE training: %d rows (%d held out), %d steps of %d x %d, layers %s, query layers %s (%s), "
            "device %s, autocast %s",
            run.train_examples,
            run.eval_examples,
            run.total,
            cfg.batch_size,
            cfg.grad_accum,
            self.layers,
            list(self.query_loss.layers) if self.query_loss else "none",
            cfg.query_loss.value if self.query_loss else "-",
            run.encoder.device,
            self._amp_dtype or "off",
        )
        for line in run.settings.lines:
            logger.info("settings: %s", line)

    def _begin(self, run: Run) -> None:
        """Model in training mode; a fresh run with held-out data scores the base model (step 0)."""
        enc, p = run.encoder, run.progress
        enc.model.train()
        if self.config.gradient_checkpointing:
            set_activation_checkpointing(enc.model, True)
        if run.slices and p.step == 0 and p.best is None:
            p.last_eval = self._evaluate(run, 0)
            best = self._select(run, p.last_eval, self._last_items)
            if best is not None:
                ckpt.write_best(self.checkpoint_dir, self._checkpoint(run), best)
        p.boundary = Snapshot.take(run.compress)

    # ------------------------------------------------------------------ one step
    def _done(self, run: Run) -> bool:
        """Whether training stops before another step: the last step, or early stopping
        (``early_stopping`` stale evaluations in a row, see :mod:`esrag.train.selection`).
        """
        p, patience = run.progress, self.config.early_stopping
        if p.step >= run.total:
            return True
        return bool(patience and p.selection.stale >= patience)

    def _train_step(self, run: Run) -> dict[str, float]:
        """One optimisation step: the micro-batches' forward and backward passes, gradient
        clipping, optimizer, scaler and schedule; returns the step's loss parts.
        """
        cfg, p = self.config, run.progress
        wall, cpu = time.perf_counter(), time.process_time()
        parts: dict[str, float] = {}
        for micro in range(cfg.grad_accum):
            batch = run.plan.micro_batch(p.step * cfg.grad_accum + micro)
            out = self._loss(run.encoder, batch)
            run.scaler.scale(out.loss / cfg.grad_accum).backward()
            for key, value in out.parts.items():
                parts[key] = parts.get(key, 0.0) + value / cfg.grad_accum
        p.updating = True
        if cfg.max_grad_norm > 0:
            run.scaler.unscale_(run.optimizer)
            torch.nn.utils.clip_grad_norm_(run.params, cfg.max_grad_norm)
        run.scaler.step(run.optimizer)
        run.scaler.update()
        run.optimizer.zero_grad(set_to_none=True)
        run.scheduler.step()
        p.step += 1
        p.final_loss = parts["loss"]
        p.running = p.final_loss if p.running is None else 0.9 * p.running + 0.1 * p.final_loss
        p.step_seconds += time.perf_counter() - wall
        p.step_cpu_seconds += time.process_time() - cpu
        p.steps_timed += 1
        return parts

    def _end_step(self, run: Run, parts: dict[str, float]) -> None:
        """After an update: evaluate and select when due, log, checkpoint, then call ``on_step``."""
        cfg, p = self.config, run.progress
        step = p.step
        record: dict[str, Any] = {"step": step, "loss": p.final_loss, "lr": run.scheduler.get_last_lr()[0]}
        every = run.settings.eval_every
        due_eval = bool(run.slices) and (bool(every and step % every == 0) or step == run.total)
        best = None
        if due_eval:
            p.last_eval = self._evaluate(run, step)
            record["eval"] = p.last_eval["score"]
            best = self._select(run, p.last_eval, self._last_items)
        if step % cfg.log_every == 0 or step == run.total or due_eval:
            self._log_step(run, record, parts)
        # saved after the history record, so a resumed run has this step's entry
        due_save = bool(cfg.save_every and step % cfg.save_every == 0) or step == run.total
        due_save = due_save or best is not None or (due_eval and cfg.save_every == 0) or self._done(run)
        folder = ckpt.step_folder(self.checkpoint_dir, step)
        if due_save and not folder.exists():
            self._checkpoint(run)
        if best is not None:
            ckpt.write_best(self.checkpoint_dir, folder, best)
        p.boundary = Snapshot.take(run.compress)
        p.updating = False
        if self.on_step is not None:
            self.on_step(step, parts)

    def _log_step(self, run: Run, record: dict[str, Any], parts: dict[str, float]) -> None:
        p = run.progress
        p.history.append(record)
        logger.info(
            "step %d/%d loss %.4f (running %.4f) %s",
            p.step,
            run.total,
            p.final_loss,
            p.running,
            " ".join(f"{k}={v:.3f}" for k, v in parts.items() if k != "loss"),
        )

    # ------------------------------------------------------------------ evaluation and selection
    def _evaluate(self, run: Run, step: int) -> dict[str, float]:
        """Score the held-out slices with the model as it is after ``step`` (and log it).

        Returns the scores (``score`` and ``full``: the full view, ``shallow``: the other
        views' mean, ``noise``: the standard error against the base model, one entry per
        slice and view); the full view's per-item values go to :attr:`_last_items`.
        """
        enc = run.encoder
        enc.model.eval()
        try:
            with encoding_length(enc, self._max_length or enc.max_length):
                scores = score_slices(
                    enc, run.slices, run.views, batch_size=self.config.batch_size, query_views=run.query_views
                )
        finally:
            enc.model.train()
        base = run.progress.selection.base
        noise = 0.0 if base is None else self._noise(scores.items, base.items)
        self._last_items = scores.items
        logger.info("step %d: held-out %s", step, scores.describe(noise))
        return scores.result(noise)

    def _select(
        self, run: Run, result: dict[str, float], items: dict[str, list[float]] | None = None
    ) -> Best | None:
        """The selection rule of :mod:`esrag.train.selection` applied to ``result``.

        Records and returns the new :class:`Best` (its checkpoint becomes ``best/``), or
        returns None when ``result`` is not chosen.
        """
        p = run.progress
        evaluated = Evaluated(p.step, dict(result), dict(items or {}))
        p.selection, chosen = choose(p.selection, evaluated, self._noise)
        if not chosen:
            return None
        p.best = Best(p.step, result["score"], result)
        return p.best

    # ------------------------------------------------------------------ checkpoints and the end
    def _checkpoint(self, run: Run, snapshot: Snapshot | None = None) -> Path:
        """Checkpoint the run's current step (RNG/PCA from ``snapshot``, else now); prune old ones."""
        folder = ckpt.step_folder(self.checkpoint_dir, run.progress.step)
        ckpt.write_state(folder, run.encoder, run.train_state(self.config, snapshot))
        ckpt.prune_checkpoints(self.checkpoint_dir, self.config.keep_checkpoints)
        return folder

    def _on_interrupt(self, run: Run) -> None:
        """Checkpoint the last finished step (unless the interrupt fell inside an update)."""
        p = run.progress
        if not p.updating and p.step > 0 and not ckpt.step_folder(self.checkpoint_dir, p.step).exists():
            try:
                self._checkpoint(run, p.boundary)
            except Exception:  # keep the interrupt; the previous checkpoint stands
                logger.exception("could not checkpoint step %d after the interrupt", p.step)
        done = ckpt.checkpoint_steps(self.checkpoint_dir)
        logger.warning(
            "interrupted at step %d; run the same command again to resume from step %s",
            p.step,
            done[-1] if done else 0,
        )

    def _finish(self, run: Run) -> TrainResult:
        """Model back in eval mode; write the best (or last) model to ``output``; the result."""
        cfg, p = self.config, run.progress
        run.encoder.model.eval()
        if cfg.gradient_checkpointing:
            set_activation_checkpointing(run.encoder.model, False)
        closing = verdict(p.selection, self._noise)
        result = run.result(cfg.output, self.checkpoint_dir, closing)
        if p.step < run.total:
            logger.info(
                "early stop at step %d: %d evaluations without improvement", p.step, cfg.early_stopping
            )
        for line in closing.lines:
            (logger.warning if line.startswith("WARNING") else logger.info)("%s", line)
        last = ckpt.step_folder(self.checkpoint_dir, p.step)
        model = last if p.best is None else self.checkpoint_dir / ckpt.BEST
        manifest = {"config": cfg.to_json(), "result": result.to_json()}
        write_output(Path(cfg.output), model / "model", manifest)
        logger.info("%s", result.summary())
        return result
