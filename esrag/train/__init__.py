"""ESE fine-tuning: learn-to-express (shallow layers) + learn-to-compress (leading dims).

    from esrag.train import TrainConfig, train
    result = train(TrainConfig(train=("pairs.jsonl",), output="models/my-ese"))

See :class:`TrainConfig` for every option, :mod:`esrag.train.losses` for the objective and
its documented deviations from the paper, and :mod:`esrag.train.cli_args` for the CLI.
"""

from __future__ import annotations

from esrag.train.config import (
    CorpusPairs,
    DataKind,
    ExpressReduction,
    PcaMode,
    Precision,
    TrainConfig,
)
from esrag.train.data import Examples, load_training_data
from esrag.train.trainer import Trainer, TrainResult, train

__all__ = [
    "CorpusPairs",
    "DataKind",
    "Examples",
    "ExpressReduction",
    "PcaMode",
    "Precision",
    "TrainConfig",
    "TrainResult",
    "Trainer",
    "load_training_data",
    "train",
]
