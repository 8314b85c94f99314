"""The ESE training loop: AdamW, warmup, accumulation, AMP, evaluation, checkpoints, resume."""

from __future__ import annotations

import contextlib
import logging
import math
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from esrag._io import atomic_folder, atomic_write_json
from esrag._progress import progress
from esrag.encoder import EspressoEncoder, View, parse_view, validate_views
from esrag.encoder.config import ENCODER_CONFIG_FILE
from esrag.train import checkpoint as ckpt
from esrag.train.batching import Batch, BatchPlan, false_negative_mask
from esrag.train.config import Precision, TrainConfig
from esrag.train.data import load_training_data
from esrag.train.evaluate import evaluate_examples
from esrag.train.losses import (
    CompressLoss,
    CoSENTLoss,
    ESELoss,
    ExpressLoss,
    InfoNCELoss,
    LossOutput,
    PairEmbeddings,
)
from esrag.train.losses.base import float32_region

__all__ = ["StepCallback", "TrainResult", "Trainer", "train"]

logger = logging.getLogger(__name__)

StepCallback = Callable[[int, dict[str, float]], None]
TRAIN_MANIFEST = "esrag_train.json"


@dataclass(frozen=True)
class TrainResult:
    """What a finished run produced (also written to ``<output>/esrag_train.json``)."""

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

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        best = (
            "" if self.best_step is None else (f", best eval {self.best_score:.4f} at step {self.best_step}")
        )
        loss = "n/a" if self.final_loss is None else f"{self.final_loss:.4f}"
        return (
            f"trained {self.steps}/{self.total_steps} steps on {self.train_examples} rows in "
            f"{self.seconds:.0f}s ({self.cpu_seconds:.0f} CPU-s; final loss {loss}{best}); "
            f"model in {self.output}"
        )


def train(config: TrainConfig, *, on_step: StepCallback | None = None) -> TrainResult:
    """Run (or resume) the training described by ``config``; see :class:`Trainer`."""
    return Trainer(config, on_step=on_step).fit()


def _autocast_dtype(precision: Precision, device: torch.device) -> torch.dtype | None:
    if device.type != "cuda":
        if precision in (Precision.FP16, Precision.BF16):
            logger.warning("precision %s needs CUDA; training in fp32 on %s", precision.value, device)
        return None
    if precision is Precision.FP32:
        return None
    if precision is Precision.FP16:
        return torch.float16
    if precision is Precision.BF16 or torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float16


def _checkpointing(model: Any, enable: bool) -> None:
    """Switch activation (gradient) checkpointing; transformers 5 renamed the methods."""
    if enable:
        if hasattr(model, "activation_checkpointing_enable"):
            model.activation_checkpointing_enable({"use_reentrant": False})
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    elif hasattr(model, "activation_checkpointing_disable"):
        model.activation_checkpointing_disable()
    else:
        model.gradient_checkpointing_disable()


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
    """

    def __init__(self, config: TrainConfig, *, on_step: StepCallback | None = None) -> None:
        if not isinstance(config, TrainConfig):
            raise TypeError(f"config must be a TrainConfig, got {type(config).__name__}")
        self.config = config
        self.on_step = on_step
        self.checkpoint_dir = Path(config.checkpoint_dir or f"{config.output}-checkpoints")
        self._amp_dtype: torch.dtype | None = None  # autocast dtype of the embeddings; set by fit()

    def _check_output(self) -> None:
        """Refuse to replace an ``output`` that is not empty and not an esrag encoder folder."""
        out = Path(self.config.output)
        if not out.exists():
            return
        if not out.is_dir():
            raise ValueError(
                f"{out}: output exists and is not a folder; refusing to replace it with the "
                "trained model (choose another --output)"
            )
        if (out / ENCODER_CONFIG_FILE).is_file() or not any(out.iterdir()):
            return
        raise ValueError(
            f"{out}: output exists and is not an esrag encoder folder (no {ENCODER_CONFIG_FILE}); "
            "refusing to replace it with the trained model (choose another --output, or remove it)"
        )

    def _check_checkpoint_dir(self) -> None:
        """With resume off the checkpoint folder is deleted: only ever delete our own."""
        folder = self.checkpoint_dir
        if self.config.resume or not folder.exists() or ckpt.is_checkpoint_folder(folder):
            return
        if folder.is_dir():
            foreign = sorted(c.name for c in folder.iterdir() if not ckpt.is_checkpoint_folder_member(c.name))
            what = f"it holds {', '.join(map(repr, foreign[:3]))}" + (" ..." if len(foreign) > 3 else "")
        else:
            what = "it is a file"
        raise ValueError(
            f"{folder}: checkpoint folder exists and is not an esrag checkpoint folder ({what}); "
            "refusing to delete it to start over (choose another --checkpoint-dir, or remove it)"
        )

    # ------------------------------------------------------------------ setup
    def _encoder(self, resume_from: Path | None) -> EspressoEncoder:
        cfg = self.config
        if resume_from is not None:
            return EspressoEncoder(resume_from / "model", device=cfg.device, dtype=torch.float32)
        return EspressoEncoder(cfg.base, pooling=cfg.pooling, device=cfg.device, dtype=torch.float32)

    def _layers(self, enc: EspressoEncoder) -> list[int]:
        cfg, last = self.config, enc.num_layers
        if cfg.compress and cfg.compress_dim > enc.hidden_size:
            raise ValueError(
                f"compress_dim {cfg.compress_dim} exceeds the model's hidden size {enc.hidden_size}"
            )
        for position, layer in enumerate(cfg.layers):
            if not 1 <= layer < last:
                raise ValueError(
                    f"layers[{position}] = {layer} is not a shallow layer of this "
                    f"{last}-layer model (1..{last - 1})"
                )
        shallow = sorted(set(cfg.layers or range(1, last))) if cfg.express else []
        return [*shallow, last]

    def _views(self, enc: EspressoEncoder) -> list[View]:
        cfg = self.config
        if cfg.eval_views:
            return validate_views([parse_view(v) for v in cfg.eval_views], enc.num_layers, enc.hidden_size)
        coarse = View(min(2, enc.num_layers), min(cfg.compress_dim, enc.hidden_size))
        full = View(enc.num_layers, enc.hidden_size)
        return [coarse, full] if coarse != full else [full]

    def _losses(self) -> tuple[ESELoss, ESELoss, CompressLoss | None]:
        cfg = self.config
        compress = (
            CompressLoss(
                cfg.compress_dim,
                temperature=cfg.compress_temperature,
                mode=cfg.pca,
                momentum=cfg.pca_momentum,
            )
            if cfg.compress
            else None
        )

        def ese(base: torch.nn.Module) -> ESELoss:
            express = (
                ExpressLoss(
                    base,
                    kl_weight=cfg.kl_weight,
                    temperature=cfg.kl_temperature,
                    reduction=cfg.express_reduction,
                    prefix_dims=cfg.prefix_dims,
                )
                if cfg.express
                else None
            )
            return ESELoss(
                base,
                express=express,
                compress=compress,
                express_weight=cfg.express_weight,
                compress_weight=cfg.compress_weight,
                prefix_dims=cfg.prefix_dims,
            )

        return ese(InfoNCELoss(cfg.scale)), ese(CoSENTLoss(cfg.scale)), compress

    def _optimizer(self, enc: EspressoEncoder, total: int) -> tuple[Any, Any]:
        cfg = self.config
        decay, plain = [], []
        for name, param in enc.model.named_parameters():
            if param.requires_grad:
                no_decay = name.endswith("bias") or "norm" in name.lower()
                (plain if no_decay else decay).append(param)
        optimizer = torch.optim.AdamW(
            [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": plain, "weight_decay": 0.0}],
            lr=cfg.lr,
        )
        warmup = round(cfg.warmup_ratio * total)

        def factor(step: int) -> float:  # linear warmup to lr, then linear decay to 0
            if step < warmup:
                return (step + 1) / (warmup + 1)
            return max(0.0, (total - step) / max(1, total - warmup))

        return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, factor)

    # ------------------------------------------------------------------ one step
    def _embed(self, enc: EspressoEncoder, texts: list[str]) -> dict[int, torch.Tensor]:
        max_length = self.config.max_length or enc.max_length
        batch = enc.tokenizer(
            texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt"
        )
        features = {k: v.to(enc.device) for k, v in batch.items()}
        return enc.pooled_layers(features, self.layers)

    def _loss(self, enc: EspressoEncoder, batch: Batch) -> LossOutput:
        """The batch's loss: embeddings under autocast (if on), the loss in float32."""
        amp = self._amp_dtype
        autocast = torch.autocast(enc.device.type, dtype=amp) if amp is not None else contextlib.nullcontext()
        with autocast:
            anchors = self._embed(enc, batch.anchors)
            positives = self._embed(enc, batch.positives)
            negatives = self._embed(enc, batch.negatives) if batch.negatives is not None else None
        mask = false_negative_mask(batch.anchors, batch.positives).to(enc.device)
        scores = None if batch.scores is None else torch.tensor(batch.scores, device=enc.device)
        per_layer = {  # .float(): a no-op for float32 embeddings, a cast for autocast ones
            layer: PairEmbeddings(
                anchors[layer].float(),
                positives[layer].float(),
                None if negatives is None else negatives[layer].float(),
                scores,
                mask,
            )
            for layer in self.layers
        }
        loss = self.cosent if scores is not None else self.infonce
        with float32_region(enc.device):
            return loss(per_layer)

    @contextlib.contextmanager
    def _evaluating(self, enc: EspressoEncoder) -> Iterator[None]:
        enc.model.eval()
        try:
            yield
        finally:
            enc.model.train()

    # ------------------------------------------------------------------ main
    def fit(self) -> TrainResult:
        cfg = self.config
        started, cpu_started = time.perf_counter(), time.process_time()
        self._check_output()
        self._check_checkpoint_dir()
        train_sets, eval_sets = load_training_data(cfg)
        plan = BatchPlan(train_sets, cfg.batch_size, cfg.seed)
        total = cfg.max_steps or max(1, math.ceil(cfg.epochs * plan.per_epoch / cfg.grad_accum))
        if not cfg.resume and self.checkpoint_dir.exists():
            self._check_checkpoint_dir()  # again, just before deleting: only our checkpoints
            logger.warning("resume is off: deleting old checkpoints in %s", self.checkpoint_dir)
            shutil.rmtree(self.checkpoint_dir)
        resume_from = ckpt.latest_checkpoint(self.checkpoint_dir) if cfg.resume else None
        tensors: dict[str, Any] = {}
        state: dict[str, Any] = {}
        if resume_from is not None:
            tensors, state = ckpt.read_checkpoint(resume_from)
            saved = TrainConfig.from_json(state["config"])
            changed = cfg.differences(saved)
            if changed:
                raise ValueError(
                    f"{resume_from} was written with a different configuration "
                    f"({', '.join(changed)} differ); use the same options to resume, another "
                    f"--output, or resume=False (--no-resume) to start over"
                )
        enc = self._encoder(resume_from)
        self.layers = self._layers(enc)
        views = self._views(enc)
        self.infonce, self.cosent, compress = self._losses()
        self.infonce.to(enc.device)
        self.cosent.to(enc.device)
        optimizer, scheduler = self._optimizer(enc, total)
        amp_dtype = _autocast_dtype(cfg.precision, enc.device)
        self._amp_dtype = amp_dtype
        scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype is torch.float16)
        step = int(state.get("step", 0))
        history: list[dict[str, Any]] = list(state.get("history", []))
        best: dict[str, Any] | None = state.get("best")
        if resume_from is not None:
            optimizer.load_state_dict(tensors["optimizer"])
            scheduler.load_state_dict(tensors["scheduler"])
            if "scaler" in tensors:
                scaler.load_state_dict(tensors["scaler"])
            if compress is not None:
                compress.load_pca_state(tensors.get("pca", {}))
            torch.set_rng_state(tensors["rng_cpu"])
            if torch.cuda.is_available() and "rng_cuda" in tensors:
                torch.cuda.set_rng_state_all(list(tensors["rng_cuda"]))
            if best is not None:
                ckpt.repair_best(self.checkpoint_dir, best)
            logger.info("resuming %s from step %d of %d", cfg.output, step, total)
        else:
            torch.manual_seed(cfg.seed)
        n_train = sum(map(len, train_sets))
        n_eval = sum(map(len, eval_sets))
        logger.info(
            "ESE training: %d rows (%d eval), %d steps of %d x %d, layers %s, device %s, autocast %s",
            n_train,
            n_eval,
            total,
            cfg.batch_size,
            cfg.grad_accum,
            self.layers,
            enc.device,
            amp_dtype or "off",
        )

        def snapshot() -> dict[str, Any]:
            """RNG and running-PCA state now (the forward pass changes them mid-step)."""
            snap: dict[str, Any] = {
                "rng_cpu": torch.get_rng_state(),
                "pca": compress.pca_state(to_cpu=False) if compress is not None else {},
            }
            if torch.cuda.is_available():
                snap["rng_cuda"] = torch.cuda.get_rng_state_all()
            return snap

        def save(step: int, last_eval: dict[str, float] | None, snap: dict[str, Any] | None = None) -> Path:
            live = snapshot() if snap is None else snap
            tensor_state: dict[str, Any] = {
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "scaler": scaler.state_dict(),
                "rng_cpu": live["rng_cpu"],
                "pca": {name: value.cpu() for name, value in live["pca"].items()},
            }
            if "rng_cuda" in live:
                tensor_state["rng_cuda"] = live["rng_cuda"]
            folder = ckpt.write_checkpoint(
                ckpt.step_folder(self.checkpoint_dir, step),
                enc,
                tensor_state,
                {
                    "step": step,
                    "total_steps": total,
                    "config": cfg.to_json(),
                    "history": history,
                    "best": best,
                    "last_eval": last_eval,
                },
            )
            ckpt.prune_checkpoints(self.checkpoint_dir, cfg.keep_checkpoints)
            return folder

        def evaluate(step: int) -> tuple[dict[str, float], bool]:
            """Score the held-out data; (scores, whether this is the new best)."""
            nonlocal best
            with self._evaluating(enc):
                result = evaluate_examples(enc, eval_sets, views, batch_size=cfg.batch_size)
            logger.info(
                "step %d: eval score %.4f (%s)",
                step,
                result["score"],
                ", ".join(f"{k} {v:.4f}" for k, v in result.items() if k != "score"),
            )
            improved = best is None or result["score"] > best["score"]
            if improved:
                best = {"step": step, "score": result["score"], "eval": result}
            return result, improved

        enc.model.train()
        if cfg.gradient_checkpointing:
            _checkpointing(enc.model, True)
        last_eval: dict[str, float] | None = state.get("last_eval")
        if eval_sets and step == 0 and best is None:
            last_eval, improved = evaluate(0)
            if improved:
                ckpt.write_best(self.checkpoint_dir, save(0, last_eval), best)
        params = [p for p in enc.model.parameters() if p.requires_grad]
        running: float | None = None
        final_loss: float | None = history[-1]["loss"] if history else None
        bar = progress(total=total, desc="ESE training", show=cfg.show_progress, unit="step")
        bar.update(step)
        # ``boundary``: RNG/PCA state at the end of step ``step``; ``updating``: the state is
        # between two steps (optimizer update, evaluation, checkpoint) and cannot be saved.
        boundary = snapshot()
        updating = False
        try:
            while step < total:
                parts: dict[str, float] = {}
                for micro in range(cfg.grad_accum):
                    batch = plan.micro_batch(step * cfg.grad_accum + micro)
                    out = self._loss(enc, batch)
                    scaler.scale(out.loss / cfg.grad_accum).backward()
                    for key, value in out.parts.items():
                        parts[key] = parts.get(key, 0.0) + value / cfg.grad_accum
                updating = True
                if cfg.max_grad_norm > 0:
                    scaler.unscale_(optimizer)
                    torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
                scaler.step(optimizer)
                scaler.update()
                optimizer.zero_grad(set_to_none=True)
                scheduler.step()
                step += 1
                final_loss = parts["loss"]
                running = final_loss if running is None else 0.9 * running + 0.1 * final_loss
                bar.update(1)
                bar.set_postfix(loss=f"{running:.4f}")
                record: dict[str, Any] = {"step": step, "loss": final_loss, "lr": scheduler.get_last_lr()[0]}
                due_eval = bool(eval_sets) and (
                    (cfg.eval_every and step % cfg.eval_every == 0) or step == total
                )
                improved = False
                if due_eval:
                    last_eval, improved = evaluate(step)
                    record["eval"] = last_eval["score"]
                if step % cfg.log_every == 0 or step == total or due_eval:
                    history.append(record)
                    logger.info(
                        "step %d/%d loss %.4f (running %.4f) %s",
                        step,
                        total,
                        final_loss,
                        running,
                        " ".join(f"{k}={v:.3f}" for k, v in parts.items() if k != "loss"),
                    )
                # saved after the history record, so a resumed run has this step's entry
                due_save = (cfg.save_every and step % cfg.save_every == 0) or step == total
                due_save = due_save or improved or (due_eval and cfg.save_every == 0)
                folder = ckpt.step_folder(self.checkpoint_dir, step)
                if due_save and not folder.exists():
                    save(step, last_eval)
                if improved:
                    ckpt.write_best(self.checkpoint_dir, folder, best)
                boundary = snapshot()
                updating = False
                if self.on_step is not None:
                    self.on_step(step, parts)
        except KeyboardInterrupt:
            if not updating and step > 0 and not ckpt.step_folder(self.checkpoint_dir, step).exists():
                try:
                    save(step, last_eval, boundary)
                except Exception:  # keep the interrupt; the previous checkpoint stands
                    logger.exception("could not checkpoint step %d after the interrupt", step)
            done = ckpt.checkpoint_steps(self.checkpoint_dir)
            logger.warning(
                "interrupted at step %d; run the same command again to resume from step %s",
                step,
                done[-1] if done else 0,
            )
            raise
        finally:
            bar.close()
        enc.model.eval()
        if cfg.gradient_checkpointing:
            _checkpointing(enc.model, False)
        result = TrainResult(
            output=cfg.output,
            checkpoint_dir=str(self.checkpoint_dir),
            steps=step,
            total_steps=total,
            train_examples=n_train,
            eval_examples=n_eval,
            seconds=time.perf_counter() - started,
            cpu_seconds=time.process_time() - cpu_started,
            resumed_from=None if resume_from is None else int(state["step"]),
            final_loss=final_loss,
            best_step=None if best is None else best["step"],
            best_score=None if best is None else best["score"],
            last_eval=last_eval,
            history=history,
        )
        self._write_output(result, best is not None)
        logger.info("%s", result.summary())
        return result

    def _write_output(self, result: TrainResult, use_best: bool) -> None:
        source = (
            self.checkpoint_dir / ckpt.BEST / "model"
            if use_best
            else ckpt.step_folder(self.checkpoint_dir, result.steps) / "model"
        )
        self._check_output()
        with atomic_folder(self.config.output) as tmp:
            shutil.copytree(source, tmp, dirs_exist_ok=True)
            atomic_write_json(
                tmp / TRAIN_MANIFEST, {"config": self.config.to_json(), "result": result.to_json()}
            )
