"""``esrag tune``: apply the cheapest coarse setting that keeps a target retention."""

from __future__ import annotations

import argparse

from esrag.cli._common import open_index, print_json
from esrag.cli.sweep import add_sweep_arguments, check_sweep_args, sweep_from_args, write_outputs

__all__ = ["add_arguments", "run"]


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Add the ``esrag tune`` arguments to ``p``."""
    add_sweep_arguments(p)
    p.add_argument(
        "--output", metavar="FOLDER", default=None, help="also write sweep.json / sweep.md / sweep.png here"
    )
    p.add_argument("--dry-run", action="store_true", help="recommend only; leave the index as is")


def run(args: argparse.Namespace) -> int:
    """Run ``esrag tune``: sweep, apply the recommendation, save the index, print."""
    check_sweep_args(args)
    index, encoder = open_index(args.index, args.model, args.device)
    result, doc_layers = sweep_from_args(args, index, encoder)
    from esrag.evaluation.tune import apply_recommendation

    rec = result.recommended
    applied = False
    if rec is not None and not args.dry_run:
        applied = apply_recommendation(index, result, doc_layers)
        index.save(args.index)
    if args.output:
        from pathlib import Path

        write_outputs(result, Path(args.output), plot=True)
    if args.json:
        print_json({"applied": applied, "index": args.index, **result.to_json()})
    else:
        print(result.recommendation_text())
        if applied:
            print(f"applied to {args.index}: {index.config.to_dict()}")
        elif rec is not None:
            print("dry run: index unchanged")
    return 0 if rec is not None else 1
