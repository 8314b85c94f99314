"""ESE fine-tuning: learn-to-express (shallow layers) + learn-to-compress (leading dims).

Learn-to-compress is opt-in (``compress=True``, ``--compress``): measured, it improved no
view, because an index compresses width with a corpus-fitted ``pca``/``adapter`` transform.

    from esrag.train import TrainConfig, train
    result = train(TrainConfig(train=("pairs.jsonl",), output="models/my-ese"))

See :class:`TrainConfig` for every option, :mod:`esrag.train.losses` for the objective and
its documented deviations from the paper, and :mod:`esrag.train.cli_args` for the CLI.

The names below are imported on first use, so ``import esrag.train.config`` (and the CLI's
``esrag train --help``) does not pull in torch or transformers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from esrag._lazy import lazy_getattr

__all__ = [
    "CorpusPairs",
    "DataKind",
    "Examples",
    "ExpressReduction",
    "PcaMode",
    "Precision",
    "QueryLoss",
    "TrainConfig",
    "TrainResult",
    "Trainer",
    "load_training_data",
    "train",
]

_EXPORTS = {
    "CorpusPairs": "esrag.train.config",
    "DataKind": "esrag.train.config",
    "ExpressReduction": "esrag.train.config",
    "PcaMode": "esrag.train.config",
    "Precision": "esrag.train.config",
    "QueryLoss": "esrag.train.config",
    "TrainConfig": "esrag.train.config",
    "Examples": "esrag.train.examples",
    "load_training_data": "esrag.train.data",
    "TrainResult": "esrag.train.result",
    "Trainer": "esrag.train.trainer",
    "train": "esrag.train.trainer",
}

if TYPE_CHECKING:  # pragma: no cover
    from esrag.train.config import (
        CorpusPairs,
        DataKind,
        ExpressReduction,
        PcaMode,
        Precision,
        QueryLoss,
        TrainConfig,
    )
    from esrag.train.data import load_training_data
    from esrag.train.examples import Examples
    from esrag.train.result import TrainResult
    from esrag.train.trainer import Trainer, train


__getattr__ = lazy_getattr("esrag.train", _EXPORTS, globals())


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
