"""ESE domain fine-tuning on BEIR SciFact: shallow and cascade retrieval before vs after.

Training data: SciFact *train* qrels as (claim, abstract) pairs — 10% of the train queries
are held out for checkpoint selection — plus (title → text) pairs mined from the corpus
(label-free). The *test* qrels are used only for the final evaluation.

Evaluation on SciFact test (300 queries, 5,183 docs), for views layer 1..6 × dims
32/64/128/384: flat nDCG@10 of the view alone, and cascade nDCG@10 (shortlist 100 by the
view, reranked by layer 6 / 384 dims) with its retention = cascade / full-view nDCG@10.
Untrained embeddings come from :func:`esrag.encoder.cache.encode_cached` (pre-filled).

Usage (from the repository root; heavy: run it nice'd)::

    ESRAG_DATA=../shared/data nice python benchmarks/train_scifact.py --output runs/scifact-ese
    ... --no-express | --no-compress          # ablations
    ... --skip-train                          # only re-evaluate an existing --output model
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import sys
import time
from pathlib import Path

import numpy as np

from esrag.data import load_beir
from esrag.data.beir import load_queries
from esrag.encoder import EspressoEncoder
from esrag.encoder.cache import encode_cached, view_of
from esrag.evaluation.metrics import ndcg_at_k
from esrag.index.config import Transform
from esrag.index.transforms import fit_transform
from esrag.train import TrainConfig, train

logger = logging.getLogger("train_scifact")

LAYERS = [1, 2, 3, 4, 5, 6]
DIMS = [32, 64, 128, 384]
SHORTLIST = 100


def _top(scores: np.ndarray, k: int) -> np.ndarray:
    part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(scores, part, axis=1), axis=1, kind="stable")
    return np.take_along_axis(part, order, axis=1)


def evaluate(
    doc_emb: np.ndarray,
    query_emb: np.ndarray,
    doc_ids: list[str],
    query_ids: list[str],
    qrels: dict[str, dict[str, int]],
) -> dict[str, dict]:
    """{"L:D": {"flat": nDCG@10, "cascade": nDCG@10, "retention": cascade/full}}."""
    full_q = view_of(query_emb, LAYERS, 6, 384)
    full_d = view_of(doc_emb, LAYERS, 6, 384)
    full_scores = full_q @ full_d.T

    def ndcg(ranked: np.ndarray) -> float:
        run = {q: [doc_ids[j] for j in row] for q, row in zip(query_ids, ranked, strict=True)}
        return float(ndcg_at_k(run, qrels, 10))

    full = ndcg(_top(full_scores, 10))

    def row(scores: np.ndarray) -> dict[str, float]:
        """The view alone (flat) and as a cascade's coarse stage (shortlist, full rerank)."""
        shortlist = _top(scores, SHORTLIST)
        rerank = np.take_along_axis(full_scores, shortlist, axis=1)
        order = np.argsort(-rerank, axis=1, kind="stable")[:, :10]
        cascade = ndcg(np.take_along_axis(shortlist, order, axis=1))
        return {
            "flat": ndcg(_top(scores, 10)),
            "cascade": cascade,
            "retention": cascade / full if full else 0.0,
        }

    table: dict[str, dict] = {}
    for layer in LAYERS:
        for dim in DIMS:
            table[f"{layer}:{dim}"] = row(
                view_of(query_emb, LAYERS, layer, dim) @ view_of(doc_emb, LAYERS, layer, dim).T
            )
    # corpus-fitted coarse transforms (what ``esrag build --transform`` uses) on each layer
    for layer in LAYERS:
        source_d = view_of(doc_emb, LAYERS, layer, 384)
        source_q = view_of(query_emb, LAYERS, layer, 384)
        for kind in (Transform.PCA, Transform.ADAPTER):
            for dim in (32, 64):
                fitted = fit_transform(kind, source_d, dim, fine=full_d)
                table[f"{layer}:{dim}:{kind.value}"] = row(fitted(source_q) @ fitted(source_d).T)
    return table


def write_pairs(path: Path, pairs: list[tuple[str, str]]) -> None:
    with open(path, "w", encoding="utf-8") as handle:
        for anchor, positive in pairs:
            handle.write(json.dumps({"anchor": anchor, "positive": positive}) + "\n")


def build_training_files(
    folder: Path, work: Path, *, title_pairs: int, holdout: float, seed: int
) -> tuple[Path, Path, dict[str, int]]:
    data = load_beir(folder, "train")
    qids = sorted(data.qrels)
    random.Random(seed).shuffle(qids)
    held = set(qids[: round(holdout * len(qids))])
    train_pairs, eval_pairs = [], []
    for qid, judged in data.qrels.items():
        for doc_id, grade in judged.items():
            if grade > 0 and doc_id in data.corpus:
                pair = (data.queries[qid], data.corpus[doc_id].full_text)
                (eval_pairs if qid in held else train_pairs).append(pair)
    docs = [d for d in data.corpus.values() if d.title.strip() and d.text.strip()]
    rng = random.Random(seed)
    titles = [(d.title, d.text) for d in rng.sample(docs, min(title_pairs, len(docs)))]
    work.mkdir(parents=True, exist_ok=True)
    write_pairs(work / "train.jsonl", train_pairs + titles)
    write_pairs(work / "eval.jsonl", eval_pairs)
    counts = {
        "qrels_pairs": len(train_pairs),
        "title_pairs": len(titles),
        "heldout_pairs": len(eval_pairs),
        "heldout_queries": len(held),
    }
    return work / "train.jsonl", work / "eval.jsonl", counts


def embed(model: EspressoEncoder, folder: Path, cache: str | None, limit_docs: int | None = None) -> tuple:
    """(doc embeddings, test-query embeddings, doc ids, query ids, qrels); ``limit_docs``
    keeps only the judged documents plus that many others (a quick smoke run)."""
    test = load_beir(folder, "test")
    all_queries = load_queries(folder / "queries.jsonl")  # file order: the pre-filled cache key
    query_ids = list(all_queries)
    doc_ids, texts = test.doc_ids, test.doc_texts()
    if limit_docs is not None:
        judged = {d for docs in test.qrels.values() for d in docs}
        chosen = [i for i, d in enumerate(doc_ids) if d in judged or i < limit_docs]
        doc_ids, texts = [doc_ids[i] for i in chosen], [texts[i] for i in chosen]
    docs = encode_cached(model, texts, LAYERS, cache_dir=cache)
    queries = encode_cached(model, list(all_queries.values()), LAYERS, cache_dir=cache)
    keep = [i for i, q in enumerate(query_ids) if q in test.qrels]
    return docs, queries[keep], doc_ids, [query_ids[i] for i in keep], test.qrels


def print_table(before: dict, after: dict | None) -> None:
    print("| view | flat nDCG@10 before | after | cascade retention before | after |")
    print("|---|---|---|---|---|")
    for view, row in before.items():
        new = after[view] if after else None
        print(
            f"| {view} | {row['flat']:.3f} | {new['flat'] if new else float('nan'):.3f} | "
            f"{row['retention']:.1%} | {new['retention'] if new else float('nan'):.1%} |"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=os.environ.get("ESRAG_DATA", "../shared/data"))
    parser.add_argument("--output", default="runs/scifact-ese")
    parser.add_argument("--results", default=None, help="JSON results file")
    parser.add_argument("--title-pairs", type=int, default=5000)
    parser.add_argument("--holdout", type=float, default=0.1)
    parser.add_argument("--epochs", type=float, default=3.0)
    parser.add_argument("--max-steps", type=int, default=240)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=8e-5)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--eval-every", type=int, default=80)
    parser.add_argument("--prefix-dims", type=int, nargs="*", default=[64])
    parser.add_argument("--no-express", action="store_true")
    parser.add_argument("--no-compress", action="store_true")
    parser.add_argument("--skip-train", action="store_true")
    parser.add_argument("--cache", default=None, help="embedding cache folder")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--limit-docs", type=int, default=None, help="smoke runs only")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    folder = Path(args.data) / "scifact"
    results: dict = {"args": vars(args)}

    started = time.perf_counter()
    base = EspressoEncoder(device="cpu")
    before = evaluate(*embed(base, folder, args.cache, args.limit_docs))
    results["before"] = before
    results["before_seconds"] = time.perf_counter() - started
    del base

    output = Path(args.output)
    if not args.skip_train:
        train_file, eval_file, counts = build_training_files(
            folder,
            Path(str(output) + "-data"),
            title_pairs=args.title_pairs,
            holdout=args.holdout,
            seed=args.seed,
        )
        results["data"] = counts
        config = TrainConfig(
            train=(str(train_file),),
            eval=(str(eval_file),),
            output=str(output),
            epochs=args.epochs,
            max_steps=args.max_steps,
            batch_size=args.batch_size,
            lr=args.lr,
            max_length=args.max_length,
            eval_every=args.eval_every,
            save_every=args.eval_every,
            compress_dim=64,
            prefix_dims=tuple(args.prefix_dims),
            express=not args.no_express,
            compress=not args.no_compress,
            seed=args.seed,
            device="cpu",
            eval_views=("2:64", "6:384"),
        )
        result = train(config)
        results["config"] = config.to_json()
        results["train"] = {k: v for k, v in result.to_json().items() if k != "history"}
        results["train_history"] = result.history
        logger.info("%s", result.summary())

    started = time.perf_counter()
    trained = EspressoEncoder(output, device="cpu")
    after = evaluate(*embed(trained, folder, args.cache, args.limit_docs))
    results["after"] = after
    results["after_seconds"] = time.perf_counter() - started
    print_table(before, after)
    target = Path(args.results or f"{output}-results.json")
    target.write_text(json.dumps(results, indent=2) + "\n")
    logger.info("results written to %s", target)
    return 0


if __name__ == "__main__":
    sys.exit(main())
