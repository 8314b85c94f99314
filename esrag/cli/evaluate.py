"""``esrag eval``: cascade vs fine-only reference on labelled queries."""

from __future__ import annotations

import argparse
from typing import Any

from esrag.cli._common import CliError, add_model_args, open_index, print_json

__all__ = ["add_arguments", "add_labels_arguments", "evaluate", "load_labels", "run"]


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Add the ``esrag eval`` arguments to ``p``."""
    p.add_argument("--index", required=True, metavar="FOLDER", help="index folder")
    add_labels_arguments(p)
    p.add_argument(
        "--shortlist",
        type=int,
        default=None,
        metavar="K",
        help="coarse candidates reranked (default: the index's)",
    )
    p.add_argument(
        "--timing-queries",
        type=int,
        default=200,
        metavar="N",
        help="queries timed one by one for latency p50/p95 (default 200)",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object with keys 'cascade' and 'fine'")
    add_model_args(p, default_help="default: the index's model")


def add_labels_arguments(p: argparse.ArgumentParser) -> None:
    """Add the labelled-queries arguments (``--queries``/``--qrels`` or ``--beir``/``--split``)."""
    p.add_argument("--queries", metavar="FILE", help="queries: BEIR queries.jsonl or id<TAB>text TSV")
    p.add_argument(
        "--qrels", metavar="FILE", help="relevance judgments: qrels TSV (query-id, corpus-id, score)"
    )
    p.add_argument("--beir", metavar="FOLDER", help="a BEIR folder: its queries.jsonl and qrels/SPLIT.tsv")
    p.add_argument("--split", default="test", help="BEIR qrels split (default test)")


def load_labels(
    args: argparse.Namespace, *, required: bool = True
) -> tuple[dict[str, str] | None, dict[str, dict[str, int]] | None]:
    """(queries, qrels) from --beir or --queries/--qrels; (None, None) when allowed absent."""
    from pathlib import Path

    from esrag.data.beir import load_qrels, load_queries
    from esrag.evaluation.metrics import require_judged_queries

    def labelled(queries_path: Path, qrels_path: Path) -> tuple[dict[str, str], dict[str, dict[str, int]]]:
        queries, qrels = load_queries(queries_path), load_qrels(qrels_path)
        require_judged_queries(queries, qrels, where=f"{qrels_path} (queries from {queries_path})")
        return queries, qrels

    if args.beir:
        folder = Path(args.beir)
        qrels_path = folder / "qrels" / f"{args.split}.tsv"
        if not qrels_path.is_file():
            raise CliError(f"{qrels_path}: no qrels for split {args.split!r} in BEIR folder {folder}")
        return labelled(folder / "queries.jsonl", qrels_path)
    if args.queries and args.qrels:
        return labelled(Path(args.queries), Path(args.qrels))
    if args.queries and not args.qrels and not required:
        return load_queries(args.queries), None
    if required or args.qrels:
        raise CliError("give --queries FILE and --qrels FILE (or --beir FOLDER)")
    return None, None


def evaluate(args: argparse.Namespace) -> Any:
    """Evaluate the index's cascade against its fine-only reference on the labelled queries."""
    from esrag.evaluation.cascade import evaluate_cascade

    queries, qrels = load_labels(args)
    assert queries is not None and qrels is not None
    index, _encoder = open_index(args.index, args.model, args.device)
    return evaluate_cascade(
        index, queries, qrels, shortlist=args.shortlist, timing_queries=args.timing_queries
    )


def run(args: argparse.Namespace) -> int:
    """Run ``esrag eval`` and print the result (or JSON)."""
    result = evaluate(args)
    if args.json:
        print_json(result.to_json())
    else:
        print(f"{result.num_queries} queries, retention (cascade / fine-only nDCG@10) {result.retention:.1%}")
        cascade, fine = result.cascade.end_to_end, result.fine.end_to_end
        if cascade is not None and fine is not None:
            print(
                f"end to end (text in, ids out; p50): cascade {cascade.ms_p50:.2f} ms with the query pass to "
                f"layer {cascade.query_depth}, fine-only {fine.ms_p50:.2f} ms (layer {fine.query_depth}); "
                f"ingest: {fine.ingest_flops_per_doc / 1e9:.2f} GFLOPs per document "
                f"(to layer {fine.ingest_depth})"
            )
        print(result.to_markdown())
    return 0
