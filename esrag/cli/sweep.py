"""``esrag sweep``: coarse (layer, dim, transform) × shortlist × fine layer × query layer grid on
an index's documents, costed end to end (encoder pass + search) on this machine.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

from esrag.cli._common import CliError, add_model_args, open_index, print_json, progress_flag
from esrag.cli.evaluate import add_labels_arguments, load_labels

__all__ = [
    "add_arguments",
    "add_sweep_arguments",
    "check_sweep_args",
    "run",
    "sweep_from_args",
    "write_outputs",
]

log = logging.getLogger(__name__)


def _ints(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated ints, got {text!r}") from None
    if not values:
        raise argparse.ArgumentTypeError("expected at least one value")
    return values


def _names(text: str) -> tuple[str, ...]:
    values = tuple(x.strip() for x in text.split(",") if x.strip())
    bad = [v for v in values if v not in ("prefix", "pca", "adapter")]
    if bad or not values:
        raise argparse.ArgumentTypeError(f"transforms must be prefix, pca or adapter, got {text!r}")
    return values


def _maps(text: str) -> tuple[str, ...]:
    values = tuple(x.strip() for x in text.split(",") if x.strip())
    if not values or any(v not in ("ridge", "none") for v in values):
        raise argparse.ArgumentTypeError(f"query maps must be ridge or none, got {text!r}")
    return values


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Add the ``esrag sweep`` arguments to ``p``."""
    add_sweep_arguments(p)
    p.add_argument(
        "--output",
        metavar="FOLDER",
        default=None,
        help="write sweep.json, sweep.md and sweep.png here (default: runs/sweep-NAME)",
    )
    p.add_argument("--no-plot", action="store_true", help="skip the PNG plot")


def add_sweep_arguments(p: argparse.ArgumentParser) -> None:
    """Add the arguments ``sweep`` and ``tune`` share (index, labels, grid, target)."""
    p.add_argument("--index", required=True, metavar="FOLDER", help="index folder")
    add_labels_arguments(p)
    p.add_argument(
        "--layers",
        type=_ints,
        metavar="L1,L2",
        help="coarse layers (default: about a third, half, and all of the model's layers)",
    )
    p.add_argument(
        "--dims", type=_ints, metavar="D1,D2", help="coarse dims (default: about hidden/12, /6, /3)"
    )
    p.add_argument(
        "--transforms",
        type=_names,
        default=("prefix", "pca", "adapter"),
        metavar="T1,T2",
        help="prefix,pca,adapter (default all)",
    )
    p.add_argument(
        "--shortlists",
        type=_ints,
        default=(50, 100, 200),
        metavar="S1,S2",
        help="shortlist sizes (default 50,100,200)",
    )
    p.add_argument(
        "--query-layers",
        type=_ints,
        default=(),
        metavar="K1,K2",
        help="shallow query layers to try: the query's encoder pass stops there (default: full depth only)",
    )
    p.add_argument(
        "--query-maps",
        type=_maps,
        default=("ridge",),
        metavar="M1,M2",
        help="how a shallow query reaches the deep documents: ridge (fitted on the corpus), none "
        "(as is, for a model trained for it); default ridge",
    )
    p.add_argument(
        "--fine-layers",
        type=_ints,
        default=(),
        metavar="L1,L2",
        help="fine (document) layers to try (default: the index's); another one needs a rebuild to apply",
    )
    p.add_argument(
        "--early-exit",
        action="store_true",
        help="also try early exit on every full-depth setting: the margin calibrated for --target "
        "and fixed exit rates, with the exit rate and the end-to-end cost saved",
    )
    p.add_argument(
        "--cost",
        choices=("flops", "time"),
        default="flops",
        help="what the recommendation minimises end to end: estimated FLOPs (default) or measured time",
    )
    p.add_argument(
        "--target", type=float, default=0.99, help="retention to keep for the recommendation (default 0.99)"
    )
    p.add_argument(
        "--sample-queries",
        type=int,
        default=200,
        metavar="N",
        help="label-free: document-derived queries sampled (default 200)",
    )
    p.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")
    p.add_argument(
        "--timing-queries",
        type=int,
        default=50,
        metavar="N",
        help="queries timed one by one per setting (default 50)",
    )
    p.add_argument(
        "--no-cache", action="store_true", help="do not cache document embeddings on disk ($ESRAG_CACHE)"
    )
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    add_model_args(p, default_help="default: the index's model")


def check_sweep_args(args: argparse.Namespace) -> None:
    """Option checks that need no index or model (run before loading them)."""
    if not 0 < args.target <= 1.5:
        raise CliError(f"--target must be a retention in (0, 1.5], got {args.target}")


def sweep_from_args(args: argparse.Namespace, index: Any, encoder: Any) -> Any:
    """Run the sweep the arguments describe over ``index``'s documents."""
    from esrag.evaluation.sweep import SweepGrid
    from esrag.evaluation.tune import sweep_index

    check_sweep_args(args)
    queries, qrels = load_labels(args, required=False)
    default = SweepGrid.default(encoder.num_layers, encoder.hidden_size)
    grid = SweepGrid(
        args.layers or default.layers,
        args.dims or default.dims,
        tuple(args.transforms),
        tuple(args.shortlists),
        query_layers=tuple(args.query_layers),
        fine_layers=tuple(args.fine_layers),
        query_maps=tuple(args.query_maps),
        early_exit=args.early_exit,
    )
    return sweep_index(
        index,
        encoder,
        queries=queries,
        qrels=qrels,
        grid=grid,
        target=args.target,
        sample_queries=args.sample_queries,
        seed=args.seed,
        timing_queries=args.timing_queries,
        cache=not args.no_cache,
        batch_size=args.batch_size,
        show_progress_bar=progress_flag(args),
        cost=args.cost,
    )


def write_outputs(result: Any, folder: Path, *, plot: bool) -> list[Path]:
    """Write the sweep's JSON, Markdown and (with ``plot``) Pareto plot into ``folder``."""
    import json

    from esrag._io import atomic_write_bytes, atomic_write_json

    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_json(folder / "sweep.json", json.loads(json.dumps(result.to_json(), default=str)))
    atomic_write_bytes(folder / "sweep.md", (result.to_markdown() + "\n").encode("utf-8"))
    written = [folder / "sweep.json", folder / "sweep.md"]
    if plot:
        from esrag.evaluation.plot import plot_sweep

        written.append(plot_sweep(result, folder / "sweep.png"))
    return written


def run(args: argparse.Namespace) -> int:
    """Run ``esrag sweep`` and print the table (or JSON)."""
    check_sweep_args(args)
    index, encoder = open_index(args.index, args.model, args.device)
    result, _vectors = sweep_from_args(args, index, encoder)
    output = Path(args.output) if args.output else Path("runs") / f"sweep-{Path(args.index).name}"
    written = write_outputs(result, output, plot=not args.no_plot)
    if args.json:
        print_json(result.to_json())
    else:
        print(result.to_markdown(front_only=True))
        print("full table and plot: " + ", ".join(map(str, written)))
    return 0
