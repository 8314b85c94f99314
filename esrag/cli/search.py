"""``esrag search``: query an index."""

from __future__ import annotations

import argparse
import json
from typing import Any

from esrag.cli._common import CliError, add_model_args, open_index, print_json
from esrag.index.config import check_exit_margin
from esrag.validation import default_shortlist

__all__ = [
    "add_arguments",
    "exit_margin_arg",
    "format_hits",
    "parse_filters",
    "run",
    "search",
    "use_query_layer",
]


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Add the ``esrag search`` arguments to ``p``."""
    p.add_argument("query", nargs="+", help="one or more query strings")
    p.add_argument("--index", required=True, metavar="FOLDER", help="index folder")
    p.add_argument("-k", type=int, default=10, help="results per query (default 10)")
    p.add_argument(
        "--shortlist",
        type=int,
        default=None,
        metavar="N",
        help="coarse candidates reranked (default: the index's)",
    )
    p.add_argument(
        "--filter",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="metadata equality filter, repeatable (AND); VALUE is JSON or a string",
    )
    p.add_argument(
        "--mode",
        choices=("cascade", "coarse", "fine"),
        default="cascade",
        help="cascade (default), coarse stage only, or exact fine-only reference",
    )
    p.add_argument(
        "--query-layer",
        type=int,
        metavar="K",
        help="stop the queries' encoder pass at layer K: the index's own query layer, or, for an "
        "index without a fitted (ridge) query map, any layer (the shallow vector used as it is, "
        "for a model trained for shallow queries)",
    )
    p.add_argument(
        "--exit-margin",
        type=exit_margin_arg,
        default=None,
        metavar="M",
        help="early exit: answer a query from the coarse shortlist when its normalised top-1 "
        "coarse gap is at least M (0: always, inf: never; default: the index's). "
        "Calibrate M with `esrag sweep --early-exit`",
    )
    p.add_argument("--json", action="store_true", help="print JSON")
    add_model_args(p, default_help="default: the index's model")


def parse_filters(items: list[str]) -> dict[str, Any] | None:
    """``KEY=VALUE`` filters as a metadata filter dict, or ``None``.

    A VALUE that JSON reads as a number or a bool matches that value or the same text as a
    string (``year=2001`` matches ``2001`` and ``"2001"``: CSV/TSV corpora store every cell
    as a string); any other VALUE is a string.
    """
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise CliError(f"--filter {item!r}: expected KEY=VALUE")
        try:
            value: Any = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        if isinstance(value, (list, dict)) or value is None:
            value = raw
        out[key.strip()] = value if isinstance(value, str) else {"$in": [value, raw]}
    return out or None


def search(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Search the index for every query; hits carry id, score, text and metadata."""
    index, _encoder = open_index(args.index, args.model, args.device)
    if args.query_layer is not None:
        use_query_layer(index, args.query_layer)
    shortlist = default_shortlist(args.shortlist, args.k, index.config.shortlist)
    result = index.search(
        args.query,
        k=args.k,
        shortlist=shortlist,
        filter=parse_filters(args.filter),
        mode=args.mode,
        exit_margin=args.exit_margin,
    )
    in_force = index.stats().get("mode", "cascade")  # "coarse-only: ..." while a fill-in is pending
    exited = result.exited or [None] * len(result)
    out = []
    for query, ids, scores, gone in zip(args.query, result.ids, result.scores, exited, strict=True):
        docs = {d.id: d for d in index.get_by_ids(ids)}
        hits = [
            {
                "id": i,
                "score": round(float(s), 6),
                "text": docs[i].text if i in docs else None,
                "metadata": dict(docs[i].metadata) if i in docs else {},
            }
            for i, s in zip(ids, scores, strict=True)
        ]
        entry: dict[str, Any] = {"query": query, "mode": result.mode or args.mode, "index_mode": in_force}
        if gone is not None:
            entry["exited"] = gone
        out.append({**entry, "hits": hits})
    return out


def exit_margin_arg(text: str) -> float:
    """``--exit-margin`` value: a number >= 0 (``inf``: never exit)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number >= 0 (inf: never exit), got {text!r}") from None
    try:
        return check_exit_margin(value, "--exit-margin")
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def use_query_layer(index: Any, layer: int) -> None:
    """Search ``index`` with queries encoded to ``layer`` (in memory; the folder is unchanged)."""
    qmap = index.query_map
    if qmap is not None and qmap.layer == layer:
        return
    if qmap is not None and qmap.kind.value == "ridge":
        raise CliError(
            f"the index's ridge query map was fitted for layer {qmap.layer}, not {layer}; rebuild it "
            f"with `esrag build CORPUS --index ... --query-layer {layer}`"
        )
    index.reconfigure(query_layer=layer, query_map="none")


def format_hits(results: list[dict[str, Any]], width: int = 100) -> str:
    """Human-readable hits, one line per hit (text shortened to ``width``)."""
    lines: list[str] = []
    in_force = results[0].get("index_mode", "cascade") if results else "cascade"
    if in_force != "cascade":
        lines.append(f"({in_force}: searched in coarse mode until the fill-in completes)")
    for res in results:
        lines.append(
            f"query: {res['query']}" + ("  (early exit: coarse scores)" if res.get("exited") else "")
        )
        if not res["hits"]:
            lines.append("  (no results)")
        for rank, hit in enumerate(res["hits"], 1):
            text = " ".join((hit["text"] or "").split())
            if len(text) > width:
                text = text[: width - 1] + "…"
            lines.append(f"  {rank:>2}. {hit['score']:.4f}  {hit['id']}  {text}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """Run ``esrag search`` and print the hits (or JSON)."""
    results = search(args)
    if args.json:
        print_json(results[0] if len(results) == 1 else results)
    else:
        print(format_hits(results))
    return 0
