"""``esrag build``: build an index from a corpus, or update it incrementally."""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path
from typing import Any

from esrag.cli._common import CliError, add_model_args, corpus_spec, print_json, progress_flag

__all__ = ["add_arguments", "build", "config_overrides", "read_documents", "run", "summary"]

log = logging.getLogger(__name__)

_BATCH = 1000


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Add the ``esrag build`` arguments to ``p``."""
    p.add_argument(
        "corpus",
        metavar="CORPUS",
        help="JSONL/CSV/TSV/Parquet file, a folder of .txt/.md files, or a BEIR folder",
    )
    p.add_argument("--index", required=True, metavar="FOLDER", help="index folder, e.g. indexes/docs")
    add_model_args(p, default_help="default: the index's model, else 'default'")
    g = p.add_argument_group("cascade settings (an existing index keeps its own unless given)")
    g.add_argument(
        "--coarse",
        metavar="LAYER:DIM",
        help="coarse view: source layer and dims after the transform (default: last:64)",
    )
    g.add_argument("--fine", metavar="LAYER:DIM", help="fine view (default: the model's full view)")
    g.add_argument("--transform", choices=("prefix", "pca", "adapter"), help="coarse transform (default pca)")
    g.add_argument(
        "--coarse-index",
        metavar="FACTORY",
        help="faiss factory string of the coarse index: Flat, HNSW32, IVF1024,Flat, ...",
    )
    g.add_argument("--shortlist", type=int, metavar="N", help="default shortlist (default 100)")
    g.add_argument("--fine-dtype", choices=("float32", "float16"), help="fine vector storage")
    g.add_argument(
        "--query-layer",
        type=int,
        metavar="K",
        help="queries' encoder pass stops at layer K (below the fine layer: shallow queries against "
        "deep documents; default: full depth)",
    )
    g.add_argument(
        "--query-map",
        choices=("ridge", "none"),
        help="how a shallow query reaches the deep documents: ridge (fitted on the corpus, default) "
        "or none (as is, for a model trained for shallow queries)",
    )
    c = p.add_argument_group("corpus fields")
    c.add_argument(
        "--format",
        choices=("jsonl", "csv", "tsv", "parquet", "folder", "beir"),
        help="corpus format (default: from the file name)",
    )
    c.add_argument("--id-field", help="id field (default 'id', else '_id')")
    c.add_argument("--text-field", default="text", help="text field (default 'text')")
    c.add_argument(
        "--title-field",
        default="title",
        help="optional title field prepended to the text (default 'title'; '' for none)",
    )
    c.add_argument(
        "--metadata-field",
        action="append",
        metavar="NAME",
        help="keep only these metadata fields (repeatable; default: all scalar fields)",
    )
    c.add_argument(
        "--chunk-size",
        type=int,
        default=1000,
        metavar="CHARS",
        help="chunk size for folders of text files (default 1000)",
    )
    c.add_argument(
        "--chunk-overlap",
        type=int,
        default=200,
        metavar="CHARS",
        help="chunk overlap for folders of text files (default 200)",
    )
    p.add_argument(
        "--cache-embeddings",
        action="store_true",
        help="encode every layer once through the on-disk embedding cache "
        "($ESRAG_CACHE) for fresh builds and coarse-setting changes, so later "
        "sweeps/tunes of the same corpus are free (N x layers x hidden x 4 bytes)",
    )
    p.add_argument(
        "--rebuild", action="store_true", help="re-encode everything instead of updating the existing index"
    )
    p.add_argument(
        "--shallow-first",
        action="store_true",
        help="a new index: encode every document only to the coarse layer, save it (searchable in coarse "
        "mode), then fill in the fine vectors chunk by chunk (interrupt and rerun to resume; needs a "
        "coarse layer below the fine one, e.g. --coarse 2:64)",
    )
    p.add_argument(
        "--fill-chunk",
        type=int,
        default=1024,
        metavar="N",
        help="documents per committed chunk of the fine fill-in (default 1024)",
    )
    p.add_argument("--json", action="store_true", help="print a JSON report")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    from esrag.cli.build_ray import add_ray_arguments

    add_ray_arguments(p)


def config_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """CascadeConfig fields given on the command line."""
    from esrag.encoder.views import parse_view

    out: dict[str, Any] = {}
    if args.coarse:
        view = parse_view(args.coarse, what="--coarse")
        out.update(coarse_layer=view.layer, coarse_dim=view.dim)
    if args.fine:
        out["fine_view"] = parse_view(args.fine, what="--fine")
    for arg, name in (
        ("transform", "transform"),
        ("coarse_index", "index_type"),
        ("shortlist", "shortlist"),
        ("fine_dtype", "fine_dtype"),
        ("query_layer", "query_layer"),
        ("query_map", "query_map"),
    ):
        if getattr(args, arg) is not None:
            out[name] = getattr(args, arg)
    return out


def read_documents(args: argparse.Namespace) -> list[Any]:
    """Read (and fully validate) the corpus named on the command line."""
    from esrag.data.corpus import read_corpus

    return list(read_corpus(args.corpus, corpus_spec(args), args.format))


def run(args: argparse.Namespace) -> int:
    """Run ``esrag build``: build or update, then print the summary (or JSON)."""
    report = build(args)
    if args.json:
        print_json(report)
    else:
        print(summary(report))
    return 0


def summary(report: dict[str, Any]) -> str:
    """A two-line human summary of a :func:`build` report: what the index actually uses (and
    what was asked, where the fitted transform or dimension differs from the settings).
    """
    cfg, used = report["config"], report["coarse"]
    coarse = f"layer {used['layer'] or 'last'}, {used['dim']} dims, {used['transform']}"
    if (used["dim"], used["transform"]) != (cfg["coarse_dim"], cfg["transform"]):
        coarse += f" (asked: {cfg['coarse_dim']} dims, {cfg['transform']})"
    head = (
        f"{report['action']} {report['index']}: {report['docs']} docs "
        f"(+{report['added']} new, ~{report['updated']} changed, -{report['deleted']} deleted,"
        f" {report['unchanged']} unchanged; {report['encoded']} encoded) in "
        f"{report['seconds']:.1f}s"
    )
    tail = f"\n  coarse: {coarse}, {cfg['index_type']}; shortlist {cfg['shortlist']}"
    if report.get("filled"):
        tail += f"\n  fine vectors filled in for {report['filled']} docs"
        if "searchable_seconds" in report:
            tail += f" (searchable in coarse mode after {report['searchable_seconds']:.1f}s)"
    if report.get("mode", "cascade") != "cascade":
        tail += f"\n  search mode: {report['mode']}"
    if cfg.get("query_map"):
        tail += f"\n  queries: encoder pass to layer {cfg['query_layer']} ({cfg['query_map']} query map)"
    return head + tail


def build(args: argparse.Namespace) -> dict[str, Any]:
    """Build or update; the folder is replaced atomically, only after everything succeeded."""
    from esrag._io import recover_folder
    from esrag.index import is_index_folder

    start = time.perf_counter()
    folder = Path(args.index)
    if folder.exists() and not folder.is_dir():
        raise CliError(f"--index {folder}: is a file, not an index folder")
    recover_folder(folder)
    overrides = config_overrides(args)
    _check_shallow_args(args)
    if getattr(args, "ray", None) is not None:
        from esrag.cli.build_ray import build_ray

        return build_ray(args, overrides)  # reads, encodes and writes on the cluster
    docs = read_documents(args)  # validate the whole corpus before touching anything
    if is_index_folder(folder) and not args.rebuild:
        report = _update(args, folder, docs, overrides)
    else:
        if folder.exists() and not is_index_folder(folder) and any(folder.iterdir()):
            raise CliError(f"{folder}: exists and is not an esrag index; refusing to overwrite")
        report = _fresh(args, folder, docs, overrides)
    report["seconds"] = time.perf_counter() - start
    if "searchable_at" in report:
        report["searchable_seconds"] = report.pop("searchable_at") - start
    return report


def _check_shallow_args(args: argparse.Namespace) -> None:
    """Refuse the options ``--shallow-first`` cannot be combined with."""
    if not args.shallow_first:
        return
    for flag, given in (
        ("--ray", getattr(args, "ray", None) is not None),
        ("--cache-embeddings", args.cache_embeddings),
    ):
        if given:
            raise CliError(
                f"--shallow-first cannot be combined with {flag} (it encodes every layer up front)"
            )
    if args.fill_chunk < 1:
        raise CliError(f"--fill-chunk must be a positive number of documents, got {args.fill_chunk}")


def _fill(args: argparse.Namespace, folder: Path, index: Any) -> int:
    """Fill in the fine vectors of a coarse-only index, committing chunks to ``folder``."""
    return int(
        index.fill_fine(
            folder,
            chunk_size=args.fill_chunk,
            batch_size=args.batch_size,
            show_progress_bar=progress_flag(args),
        )
    )


def _fresh(
    args: argparse.Namespace, folder: Path, docs: list[Any], overrides: dict[str, Any]
) -> dict[str, Any]:
    from esrag.cli._common import load_encoder, model_of_index
    from esrag.index import CascadeConfig, CascadeIndex, is_index_folder

    model = args.model
    if model is None and is_index_folder(folder):
        model = model_of_index(folder)  # --rebuild keeps the model unless told otherwise
    encoder = load_encoder(model, args.device)
    _check_coarse(overrides, encoder)
    config = CascadeConfig(**overrides)
    texts, ids, metas = [d.text for d in docs], [d.id for d in docs], [d.metadata for d in docs]
    build_kwargs: dict[str, Any] = {"ids": ids, "metadatas": metas, "config": config}
    build_kwargs.update(batch_size=args.batch_size, show_progress_bar=progress_flag(args))
    if args.shallow_first:
        index = CascadeIndex.build(encoder, texts, **build_kwargs, shallow_first=True)
        index.save(folder)
        searchable = time.perf_counter()
        log.info("%s: searchable in coarse mode; filling in the fine vectors", folder)
        filled = _fill(args, folder, index)
        return {
            **_report("built", folder, index, len(docs), 0, 0, 0),
            "filled": filled,
            "searchable_at": searchable,
        }
    if args.cache_embeddings:
        from esrag.evaluation.vectors import encode_layers, fine_vectors

        fine = config.fine_view or encoder.default_view
        coarse_layer = config.coarse_layer or encoder.num_layers
        query_layer = config.query_layer or fine.layer
        layers = encode_layers(
            encoder,
            texts,
            [coarse_layer, fine.layer, query_layer],
            batch_size=args.batch_size,
            show_progress_bar=progress_flag(args),
        )
        index = CascadeIndex.build_from_embeddings(
            layers[coarse_layer],
            fine_vectors(layers[fine.layer], fine.dim),
            ids=ids,
            texts=texts,
            metadatas=metas,
            config=config,
            embedder=encoder,
            query_source=layers[query_layer] if query_layer < fine.layer else None,
        )
    else:
        index = CascadeIndex.build(encoder, texts, **build_kwargs)
    index.save(folder)
    return _report("built", folder, index, len(docs), 0, 0, 0)


def _update(
    args: argparse.Namespace, folder: Path, docs: list[Any], overrides: dict[str, Any]
) -> dict[str, Any]:
    from esrag.cli._common import open_index

    index, encoder = open_index(folder, args.model, args.device)
    _check_coarse(overrides, encoder)
    filled = _fill(args, folder, index) if getattr(index, "coarse_only", False) else 0
    config = index.config
    fine = overrides.pop("fine_view", None)
    current_fine = config.fine_view or encoder.default_view
    if fine is not None and fine != current_fine:
        raise CliError(
            f"{folder}: the index's fine view is {current_fine}, not {fine}; "
            "pass --rebuild to re-encode everything"
        )
    if "fine_dtype" in overrides and overrides.pop("fine_dtype") != config.fine_dtype:
        raise CliError(
            f"{folder}: the fine vectors are {config.fine_dtype.value}; pass --rebuild "
            "to change their storage type"
        )
    from esrag.index.sync import sync

    synced = sync(index, docs, batch_size=args.batch_size, show_progress_bar=progress_flag(args))
    current = {**config.to_dict(), "coarse_layer": config.coarse_layer or encoder.num_layers}
    retune = {k: v for k, v in overrides.items() if current[k] != v}
    shortlist = retune.pop("shortlist", None)
    if retune or shortlist is not None:
        source = None
        if retune and args.cache_embeddings:
            from esrag.evaluation.vectors import encode_layers

            layer = retune.get("coarse_layer", current["coarse_layer"])
            texts = [d.text for d in index.get_by_ids(index.ids())]
            source = encode_layers(
                encoder, texts, [layer], batch_size=args.batch_size, show_progress_bar=progress_flag(args)
            )[layer]
        index.reconfigure(
            **retune,
            shortlist=shortlist,
            coarse_source=source,
            batch_size=args.batch_size,
            show_progress_bar=progress_flag(args),
        )
    action = "updated"
    if synced.modified or retune or shortlist is not None:
        index.save(folder)
    elif not filled:
        action = "up to date"
    report = _report(
        action, folder, index, len(synced.added), len(synced.changed), len(synced.removed), len(synced.kept)
    )
    return {**report, "filled": filled}


def _check_coarse(overrides: dict[str, Any], encoder: Any) -> None:
    """``--coarse LAYER:DIM`` within the model (a larger dim would be clipped without notice)."""
    layer, dim = overrides.get("coarse_layer"), overrides.get("coarse_dim")
    layers, hidden = int(encoder.num_layers), int(encoder.hidden_size)
    if layer is not None and not 1 <= layer <= layers:
        raise CliError(f"--coarse {layer}:{dim}: the model has layers 1..{layers}")
    if dim is not None and dim > hidden:
        raise CliError(
            f"--coarse {layer}:{dim}: the model has {hidden} dims per layer; use a dim of at most {hidden}"
        )


def _report(
    action: str, folder: Path, index: Any, added: int, updated: int, deleted: int, unchanged: int
) -> dict[str, Any]:
    stats = index.stats()
    layer = index.config.coarse_layer or getattr(index.embedder, "num_layers", None)
    return {
        "action": action,
        "index": str(folder),
        "docs": len(index),
        "added": added,
        "updated": updated,
        "deleted": deleted,
        "unchanged": unchanged,
        "encoded": added + updated,
        "config": index.config.to_dict(),
        "coarse": {"layer": layer, "dim": stats["coarse_dim"], "transform": stats["transform"]},
        "mode": stats.get("mode", "cascade"),
        "filled": 0,
    }
