"""argparse glue for ``esrag train``: one option per :class:`TrainConfig` field.

The CLI calls :func:`add_train_arguments` on its ``train`` sub-parser and
:func:`run_from_args` with the parsed namespace. This module imports no torch until
:func:`run_from_args` runs.
"""

from __future__ import annotations

import argparse
import enum
import typing
from dataclasses import MISSING, fields
from typing import Any

from esrag.train.config import TrainConfig

__all__ = ["add_train_arguments", "config_from_args", "run_from_args"]

_HELP = {
    "train": "training data (repeatable): a JSONL/CSV/TSV/Parquet file, a BEIR folder "
    "(train qrels become (query, document) pairs), a corpus file with --kind corpus, "
    "or a hub dataset name",
    "output": "folder for the trained model (loads with EspressoEncoder and AutoModel)",
    "base": "model to start from (default all-MiniLM-L6-v2, offline)",
    "eval": "held-out data (repeatable); default --eval-fraction of the training rows",
    "where": "row filter COLUMN=VALUE (repeatable), e.g. split=train",
    "eval_views": "LAYER:DIM views scored on the held-out data (repeatable)",
    "layers": "shallow layers to train (repeatable; default all)",
    "prefix_dims": "extra base-loss prefix widths (repeatable; not in the ESE paper)",
    "score_range": "declared LOW HIGH range of scores; rows outside it are errors",
}
_REPEATED = {"train", "eval", "where", "eval_views", "layers", "prefix_dims"}


def _option(name: str) -> str:
    return "--" + name.replace("_", "-")


def add_train_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add ``--train`` (required), ``--output`` (required), ``--base`` and every option."""
    hints = typing.get_type_hints(TrainConfig)
    for spec in fields(TrainConfig):
        name, hint = spec.name, hints[spec.name]
        help_text = _HELP.get(name, f"see TrainConfig.{name}")
        required = spec.default is MISSING
        default = None if required else spec.default
        if isinstance(default, enum.Enum):
            choices = [m.value for m in type(default)]
            parser.add_argument(
                _option(name),
                choices=choices,
                default=default.value,
                help=f"{help_text} (default {default.value})",
            )
        elif name in _REPEATED:
            item = int if name in ("layers", "prefix_dims") else str
            parser.add_argument(
                _option(name),
                action="append",
                type=item,
                required=required,
                default=None,
                metavar=name.rstrip("s").upper(),
                help=help_text,
            )
        elif name == "score_range":
            parser.add_argument(
                _option(name), nargs=2, type=float, metavar=("LOW", "HIGH"), default=None, help=help_text
            )
        elif hint in (bool, "bool"):
            parser.add_argument(
                _option(name),
                action=argparse.BooleanOptionalAction,
                default=default,
                help=f"{help_text} (default {default})",
            )
        elif name == "show_progress":
            parser.add_argument(
                _option(name),
                action=argparse.BooleanOptionalAction,
                default=None,
                help="progress bar (default: on a terminal)",
            )
        else:
            kind = _scalar_type(hint)
            parser.add_argument(
                _option(name),
                type=kind,
                default=default,
                required=required,
                help=f"{help_text}" + ("" if required else f" (default {default})"),
            )
    return parser


def _scalar_type(hint: Any) -> type:
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    base = args[0] if args else hint
    return base if base in (int, float) else str


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """A :class:`TrainConfig` from a namespace parsed with :func:`add_train_arguments`."""
    values: dict[str, Any] = {}
    for spec in fields(TrainConfig):
        if not hasattr(args, spec.name):
            continue
        value = getattr(args, spec.name)
        if spec.name in _REPEATED and value is None:
            continue
        if spec.name in _REPEATED or spec.name == "score_range":
            value = tuple(value) if value is not None else None
        values[spec.name] = value
    return TrainConfig(**values)


def run_from_args(args: argparse.Namespace) -> Any:
    """Build the config, train, and return the :class:`~esrag.train.TrainResult`."""
    from esrag.train.trainer import train

    return train(config_from_args(args))
