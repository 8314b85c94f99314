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
    "eval_fraction": "share of the distinct training queries held out for selection "
    "(default: 10%%, at most 300, when that gives at least 20)",
    "eval_every": "evaluate every N steps (0: only at the end; default about 6 per run)",
    "eval_docs": "documents the held-out queries are ranked against (the corpus, sampled to this)",
    "early_stopping": "stop after N evaluations without improvement (0: never)",
    "strict": "exit non-zero when no trained checkpoint beats the base model on the held-out slice",
    "min_grade": "BEIR judgments of at least this grade are training pairs; lower ones are masked",
    "hard_negatives": "mine one hard negative per pair with the base model",
    "negative_skip": "mined negatives skip this many top-ranked documents",
    "negative_depth": "mined negatives come from the top N documents",
    "epochs": "passes over the data (default: from the data's size)",
    "max_length": "tokens per text while training (default: from the data's token lengths)",
    "warmup_ratio": "share of the steps with linear warmup (default 10%%, at most 100 steps)",
    "query_layers": "shallow query layers K[,K...] to train against last-layer documents "
    "(repeatable), for an index built with --query-layer K --query-map none",
    "query_loss": "the query layers' terms: distill (label-free: a query's layer K towards its "
    "own detached last layer), contrastive (layer-K query vs its positive's last layer, in-batch "
    "and hard negatives) or both",
    "query_weight": "weight of the query layers' terms (added to the ESE loss)",
    "compress": "learn-to-compress on the first --compress-dim dims (off by default: it improved no "
    "measured view; width is compressed at index time by the pca/adapter transforms)",
}
_REPEATED = {"train", "eval", "where", "eval_views", "layers", "prefix_dims", "query_layers"}


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
        elif name == "query_layers":
            parser.add_argument(
                _option(name),
                action="extend",
                type=_int_list,
                default=None,
                metavar="K[,K...]",
                help=help_text,
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


def _int_list(text: str) -> list[int]:
    """``"2,3"`` → ``[2, 3]`` (argparse reports the ValueError as an invalid value)."""
    try:
        return [int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected layer numbers like 2,3, got {text!r}") from None


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
