"""Everything a run trains and selects on, before the first step: the training sources after
the held-out split (and hard-negative mining), the held-out slices, the batch plan and the
settings chosen from the data.

A resumed run gets the same: the held-out anchors and the mined negatives are read back from
its checkpoint (:class:`~esrag.train.checkpoint.TrainState`), not drawn again.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from esrag.encoder import EspressoEncoder
from esrag.train.batching import BatchPlan
from esrag.train.checkpoint import TrainState
from esrag.train.config import TrainConfig
from esrag.train.data import check_training_sources
from esrag.train.defaults import Settings, encoding_length, resolve
from esrag.train.examples import Examples
from esrag.train.holdout import AUTO_FRACTION, AUTO_MIN, Slice, build_slices, split_sources
from esrag.train.negatives import apply_negatives, mine_negatives, wants_negatives

__all__ = ["Prepared", "prepare"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Prepared:
    """A run's data: training sources, held-out slices and anchors, mined picks, plan, settings."""

    train: list[Examples]
    slices: list[Slice]
    holdout: tuple[str, ...]
    negatives: dict[str, list[int]]
    plan: BatchPlan
    settings: Settings


def _held_out(
    config: TrainConfig,
    loaded: tuple[list[Examples], list[Examples]],
    saved_holdout: tuple[str, ...] | None,
) -> tuple[list[Examples], list[Slice], tuple[str, ...]]:
    train, explicit = loaded
    if explicit:
        return (
            train,
            build_slices([(None, ex) for ex in explicit if len(ex) >= 2], config.eval_docs, config.seed),
            (),
        )
    split = split_sources(train, config.eval_fraction, config.seed, saved_holdout)
    parts = [(t, h) for t, h in split.pairs if h is not None and len(h) >= 2]
    if not parts and config.eval_fraction is None:
        logger.warning(
            "no held-out selection: too few distinct training anchors for the automatic slice "
            "(%g of them must be at least %d); the last step's model is the output. Pass "
            "--eval-fraction or --eval to select on held-out data",
            AUTO_FRACTION,
            AUTO_MIN,
        )
    return split.train, build_slices(parts, config.eval_docs, config.seed), split.anchors


def _mine(
    config: TrainConfig, encoder: EspressoEncoder, train: list[Examples], saved: dict[str, list[int]] | None
) -> tuple[list[Examples], dict[str, list[int]]]:
    picks: dict[str, list[int]] = {}
    encoded: dict[int, np.ndarray] = {}  # sources sharing one corpus encode it once
    out = list(train)
    for number, ex in enumerate(train):
        if not wants_negatives(ex):
            continue
        key = str(number)
        if saved is not None and key in saved:
            picks[key] = list(saved[key])
        else:
            corpus_key = id(ex.corpus) if ex.corpus is not None else -1 - number
            picks[key], encoded[corpus_key] = mine_negatives(
                encoder,
                ex,
                skip=config.negative_skip,
                depth=config.negative_depth,
                seed=config.seed + number,
                batch_size=config.batch_size,
                doc_vectors=encoded.get(corpus_key),
            )
        out[number] = apply_negatives(ex, picks[key])
    return out, picks


def prepare(
    config: TrainConfig,
    loaded: tuple[list[Examples], list[Examples]],
    encoder: EspressoEncoder,
    saved: TrainState | None,
) -> Prepared:
    """Split, plan, resolve and (``hard_negatives``) mine the ``loaded`` (training, eval)
    sources of :func:`~esrag.train.data.load_sources`; ``saved`` is the resumed run's
    state, or None (``encoder`` is then the base model, which mines).
    """
    train, slices, holdout = _held_out(config, loaded, None if saved is None else saved.holdout)
    check_training_sources(train)
    plan = BatchPlan(train, config.batch_size, config.seed)
    settings = resolve(config, train, plan.per_epoch, encoder, evaluates=bool(slices))
    negatives: dict[str, list[int]] = {}
    if config.hard_negatives:
        with encoding_length(encoder, settings.max_length):
            train, negatives = _mine(config, encoder, train, None if saved is None else saved.negatives)
        plan = BatchPlan(train, config.batch_size, config.seed)
    return Prepared(train, slices, holdout, negatives, plan, settings)
