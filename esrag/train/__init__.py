"""ESE fine-tuning: learn-to-express (shallow layers) + learn-to-compress (leading dims).

    from esrag.train import TrainConfig, train
    result = train(TrainConfig(train=("pairs.jsonl",), output="models/my-ese"))

See :class:`TrainConfig` for every option, :mod:`esrag.train.losses` for the objective and
its documented deviations from the paper, and :mod:`esrag.train.cli_args` for the CLI.

The names below are imported on first use, so ``import esrag.train.config`` (and the CLI's
``esrag train --help``) does not pull in torch or transformers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

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

_EXPORTS = {
    "CorpusPairs": "esrag.train.config",
    "DataKind": "esrag.train.config",
    "ExpressReduction": "esrag.train.config",
    "PcaMode": "esrag.train.config",
    "Precision": "esrag.train.config",
    "TrainConfig": "esrag.train.config",
    "Examples": "esrag.train.data",
    "load_training_data": "esrag.train.data",
    "TrainResult": "esrag.train.trainer",
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
        TrainConfig,
    )
    from esrag.train.data import Examples, load_training_data
    from esrag.train.trainer import Trainer, TrainResult, train


def __getattr__(name: str) -> Any:
    """Import the trainer (torch, transformers) and the data readers only when first used."""
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'esrag.train' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
