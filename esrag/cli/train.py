"""``esrag train``: ESE fine-tuning (wraps :mod:`esrag.train`)."""

from __future__ import annotations

import argparse
import logging
import sys

from esrag.cli._common import print_json

__all__ = ["add_arguments", "run"]


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Add the ``esrag train`` arguments (one per :class:`TrainConfig` field) to ``p``."""
    from esrag.train.cli_args import add_train_arguments

    add_train_arguments(p)
    p.add_argument("--json", action="store_true", help="print the training result as JSON")


def run(args: argparse.Namespace) -> int:
    """Run ``esrag train`` and print the result; with ``--strict``, exit 1 when the output is
    the base model because no trained checkpoint beat it on the held-out slice.
    """
    from esrag.train.cli_args import run_from_args

    if not getattr(args, "verbose", 0):  # the settings, evaluations and verdict are the command's output
        logging.getLogger("esrag.train.trainer").setLevel(logging.INFO)
    result = run_from_args(args)
    if args.json:
        print_json(result.to_json())
    else:
        print(result.summary())
    if args.strict and result.kept_base:
        print(
            "esrag train: error: --strict: training did not beat the base model on the held-out "
            f"slice; {result.output} holds the base model unchanged",
            file=sys.stderr,
        )
        return 1
    return 0
