"""Run settings chosen from the data when the config leaves them to it (``None``).

- ``max_length``: the smallest of 32/64/128/256/512 tokens that holds 90% of the training
  texts (a seeded sample of up to 2,000), at most the model's own limit and
  :data:`CPU_LENGTH_CAP` on CPU / :data:`GPU_LENGTH_CAP` on GPU (a step's cost grows with it).
- steps: ``max_steps``, else ``epochs`` passes, else about :data:`AUTO_ROWS` rows seen —
  between 1 and :data:`AUTO_MAX_EPOCHS` epochs, at most :data:`AUTO_MAX_STEPS` steps (held-out
  selection and early stopping make a generous budget safe).
- warmup: ``warmup_ratio`` of the steps, else 10% of them, at most 100.
- ``eval_every``: given, else about :data:`AUTO_EVALUATIONS` evaluations per run.

:func:`resolve` returns them with one line each on how they were chosen (logged at the
start of a run); :func:`encoding_length` is the context in which a run encodes held-out and
mining texts at its ``max_length``.
"""

from __future__ import annotations

import contextlib
import math
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from esrag.encoder import EspressoEncoder
from esrag.train.config import TrainConfig
from esrag.train.examples import Examples

__all__ = [
    "AUTO_EVALUATIONS",
    "AUTO_MAX_EPOCHS",
    "AUTO_MAX_STEPS",
    "AUTO_ROWS",
    "CPU_LENGTH_CAP",
    "GPU_LENGTH_CAP",
    "Settings",
    "encoding_length",
    "resolve",
]

LENGTHS = (32, 64, 128, 256, 512)
CPU_LENGTH_CAP = 128
GPU_LENGTH_CAP = 256
AUTO_ROWS = 4000
AUTO_MAX_EPOCHS = 3.0
AUTO_MAX_STEPS = 2000
AUTO_EVALUATIONS = 6
_SAMPLE = 2000


@dataclass(frozen=True)
class Settings:
    """What a run uses, explicit or chosen from the data, and how each was chosen."""

    max_length: int
    total_steps: int
    warmup_steps: int
    eval_every: int
    lines: tuple[str, ...]


def _length(config: TrainConfig, sources: Sequence[Examples], encoder: EspressoEncoder) -> tuple[int, str]:
    if config.max_length is not None:
        return config.max_length, f"max_length {config.max_length} (given)"
    texts = [t for ex in sources for t in (*ex.anchors, *ex.positives, *(ex.negatives or []))]
    if len(texts) > _SAMPLE:
        texts = random.Random(config.seed).sample(texts, _SAMPLE)
    ids = encoder.tokenizer(texts, truncation=True, max_length=LENGTHS[-1])["input_ids"]
    p90 = int(np.percentile([len(x) for x in ids], 90)) if ids else LENGTHS[0]
    bucket = next((n for n in LENGTHS if n >= p90), LENGTHS[-1])
    cap = min(encoder.max_length, GPU_LENGTH_CAP if encoder.device.type == "cuda" else CPU_LENGTH_CAP)
    chosen = min(bucket, cap)
    why = (
        f"capped at {cap} on {encoder.device.type}"
        if chosen < bucket
        else "the smallest bucket that holds them"
    )
    return chosen, f"max_length {chosen}: 90% of the training texts fit in {p90} tokens ({why})"


def _steps(config: TrainConfig, per_epoch: int, rows: int) -> tuple[int, str]:
    per_step = config.grad_accum
    if config.max_steps is not None:
        return config.max_steps, f"{config.max_steps} steps (given)"
    if config.epochs is not None:
        total = max(1, math.ceil(config.epochs * per_epoch / per_step))
        return total, f"{total} steps: {config.epochs:g} epoch(s) of {per_epoch} batches (given)"
    epochs = min(AUTO_MAX_EPOCHS, max(1.0, AUTO_ROWS / max(1, rows)))
    total = max(1, min(AUTO_MAX_STEPS, math.ceil(epochs * per_epoch / per_step)))
    return total, (
        f"{total} steps: {epochs:.2g} epoch(s) of {per_epoch} batches over {rows} rows "
        f"(about {AUTO_ROWS} rows seen, 1..{AUTO_MAX_EPOCHS:g} epochs, at most {AUTO_MAX_STEPS} steps)"
    )


def resolve(
    config: TrainConfig,
    sources: Sequence[Examples],
    per_epoch: int,
    encoder: EspressoEncoder,
    *,
    evaluates: bool,
) -> Settings:
    """The run's settings from ``config`` and the training ``sources`` (``per_epoch`` batches)."""
    max_length, length_line = _length(config, sources, encoder)
    total, steps_line = _steps(config, per_epoch, sum(map(len, sources)))
    if config.warmup_ratio is not None:
        warmup, warmup_line = (
            round(config.warmup_ratio * total),
            f"warmup {config.warmup_ratio:g} of the steps",
        )
    else:
        warmup, warmup_line = min(100, round(0.1 * total)), "warmup 10% of the steps, at most 100"
    if config.eval_every is not None:
        every, eval_line = config.eval_every, f"evaluate every {config.eval_every} steps (given)"
    else:
        every = max(1, math.ceil(total / AUTO_EVALUATIONS))
        eval_line = f"evaluate every {every} steps (about {AUTO_EVALUATIONS} per run)"
    lines = [length_line, steps_line, f"{warmup_line}: {warmup} steps"]
    if evaluates:
        lines.append(eval_line)
    return Settings(max_length, total, warmup, every, tuple(lines))


@contextlib.contextmanager
def encoding_length(encoder: EspressoEncoder, max_length: int) -> Iterator[None]:
    """Encode at ``max_length`` tokens inside the block (the encoder's own length after it)."""
    saved = encoder.max_length
    encoder.max_length = min(max_length, saved)
    try:
        yield
    finally:
        encoder.max_length = saved
