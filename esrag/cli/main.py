"""``esrag`` entry point: argparse subcommands, each importing its implementation only when run."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Callable, Sequence

__all__ = ["build_parser", "main"]

_COMMANDS: dict[str, tuple[str, str]] = {
    "build": ("esrag.cli.build", "build or incrementally update an index from a corpus"),
    "search": ("esrag.cli.search", "query an index"),
    "eval": ("esrag.cli.evaluate", "cascade vs fine-only quality and latency on labelled queries"),
    "sweep": ("esrag.cli.sweep", "grid of coarse settings: retention vs cost, Pareto front"),
    "tune": ("esrag.cli.tune", "apply the cheapest coarse setting that keeps a target retention"),
    "train": ("esrag.cli.train", "ESE fine-tuning of an encoder"),
    "run": ("esrag.cli.run", "run a pipeline recipe (TOML): train → build → eval → sweep"),
}


def _wanted(argv: Sequence[str]) -> str | None:
    for token in argv:
        if not token.startswith("-"):
            return token
    return None


def build_parser(argv: Sequence[str] = ()) -> argparse.ArgumentParser:
    """The full parser; only the subcommand named in ``argv`` imports its argument module."""
    parser = argparse.ArgumentParser(
        prog="esrag",
        description="Cheap, accurate retrieval with Espresso Sentence Embeddings: a two-stage "
        "cascade (shallow low-dim shortlist, deep full-dim rerank).",
        epilog="Start with: esrag run pipelines/quickstart.toml",
    )
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="log more (-v info, -vv debug)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    wanted = _wanted(argv)
    for name, (module, help_text) in _COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(command_module=module)
        if name == wanted:
            importlib.import_module(module).add_arguments(p)
    return parser


def _configure_logging(verbosity: int) -> None:
    level = logging.WARNING if verbosity == 0 else logging.INFO if verbosity == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns (and exits with) 0 on success, 2 on bad input."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(args_list)
    args = parser.parse_args(args_list)
    if args.version:
        from esrag import __version__

        print(f"esrag {__version__}")
        return 0
    if not args.command:
        parser.print_help()
        return 2
    _configure_logging(args.verbose)
    run: Callable[[argparse.Namespace], int] = importlib.import_module(args.command_module).run
    from esrag.errors import EsragError

    try:
        return int(run(args) or 0)
    except KeyboardInterrupt:
        print("esrag: interrupted", file=sys.stderr)
        return 130
    except (EsragError, ValueError, TypeError, OSError, ImportError) as err:  # OSError: files, disks
        if args.verbose > 1:
            raise
        print(f"esrag {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
