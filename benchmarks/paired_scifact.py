"""Is one trained model really better than another? Paired per-query test on SciFact test.

For each model folder: per-query full-view nDCG@10 (layer 6, 384 dims, flat) on the 300
SciFact test queries. Against the first model (the baseline) each other model gets the
mean per-query difference, its standard error (paired over the same queries) and a seeded
bootstrap 95% interval, so a 0.01 gap between two runs can be told from query noise. Seed
replicates of one recipe (``train_scifact.py --seed N``) measure run-to-run noise the same way.

Usage (from ``benchmarks/``; embeddings are cached by model and data hash, so models a
``train_scifact.py`` run already evaluated with the same ``--cache`` cost nothing)::

    python paired_scifact.py --cache CACHE BASE_OR_RUN_A RUN_B [RUN_C ...] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np
from _env import environment
from scifact_eval import LAYERS, embed, top_k

from esrag.encoder import EspressoEncoder
from esrag.encoder.cache import view_of
from esrag.evaluation.metrics import ndcg_at_k

BOOTSTRAP = 10_000


def per_query_full(model_dir: str, folder: Path, cache: str | None) -> dict[str, float]:
    """Per-query nDCG@10 of ``model_dir``'s full view (flat search) on SciFact test."""
    docs, queries, doc_ids, query_ids, qrels = embed(EspressoEncoder(model_dir, device="cpu"), folder, cache)
    scores = view_of(queries, LAYERS, 6, 384) @ view_of(docs, LAYERS, 6, 384).T
    run = {q: [doc_ids[j] for j in row] for q, row in zip(query_ids, top_k(scores, 10), strict=True)}
    return ndcg_at_k(run, qrels, 10, per_query=True)


def paired(baseline: dict[str, float], other: dict[str, float], seed: int = 0) -> dict[str, float]:
    """Mean of other − baseline over the shared queries, its s.e. and a bootstrap 95% interval."""
    queries = sorted(baseline)
    diff = np.array([other[q] - baseline[q] for q in queries])
    rng = np.random.default_rng(seed)
    means = diff[rng.integers(0, len(diff), size=(BOOTSTRAP, len(diff)))].mean(axis=1)
    low, high = np.quantile(means, [0.025, 0.975])
    return {
        "mean": float(np.mean([other[q] for q in queries])),
        "diff": float(diff.mean()),
        "se": float(diff.std(ddof=1) / np.sqrt(len(diff))),
        "ci95": [float(low), float(high)],
        "queries": len(diff),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("models", nargs="+", help="model folders; the first is the baseline")
    parser.add_argument("--data", default=os.environ.get("ESRAG_DATA", "../shared/data"))
    parser.add_argument("--cache", default=None, help="embedding cache folder")
    parser.add_argument("--json", default=None, help="write the results here")
    args = parser.parse_args(argv)
    if len(args.models) < 2:
        parser.error("name a baseline and at least one model to compare with it")
    folder = Path(args.data) / "scifact"
    scores = {model: per_query_full(model, folder, args.cache) for model in args.models}
    baseline = scores[args.models[0]]
    print(environment())
    print(f"baseline {args.models[0]}: full nDCG@10 {np.mean(list(baseline.values())):.4f}")
    print("| model | full nDCG@10 | − baseline | s.e. (paired) | bootstrap 95% |")
    print("|---|---|---|---|---|")
    results = {}
    for model in args.models[1:]:
        row = results[model] = paired(baseline, scores[model])
        print(
            f"| {model} | {row['mean']:.4f} | {row['diff']:+.4f} | {row['se']:.4f} | "
            f"[{row['ci95'][0]:+.4f}, {row['ci95'][1]:+.4f}] |"
        )
    if args.json:
        out = {"environment": environment(), "baseline": args.models[0], "compared": results}
        Path(args.json).write_text(json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
