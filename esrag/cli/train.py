"""``esrag train``: ESE fine-tuning (wraps :mod:`esrag.train`)."""

from __future__ import annotations

import argparse

from esrag.cli._common import print_json

__all__ = ["add_arguments", "run"]


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Add the ``esrag train`` arguments (one per :class:`TrainConfig` field) to ``p``."""
    from esrag.train.cli_args import add_train_arguments

    add_train_arguments(p)
    p.add_argument("--json", action="store_true", help="print the training result as JSON")


def run(args: argparse.Namespace) -> int:
    """Run ``esrag train`` and print the result."""
    from esrag.train.cli_args import run_from_args

    result = run_from_args(args)
    if args.json:
        print_json(result.to_json())
    else:
        print(result.summary())
    return 0
