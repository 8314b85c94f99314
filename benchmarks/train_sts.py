"""ESE general-domain training: STS-B train (+ SNLI triplets) → STS-B test Spearman per view.

Training data: STS-B *train* (5,749 scored pairs, CoSENT) plus the SNLI dev+test triplets
(SimCSE style, InfoNCE with hard negatives). STS-B *dev* is the held-out split for
checkpoint selection. STS-B *test* is used only for the final evaluation: Spearman of the
cosine with the gold score for layers 1..6 × dims 32/64/128/384, before vs after, and the
ratio of each layer's full-width Spearman to the full view's.

Usage (from the repository root; heavy: run it nice'd)::

    nice python benchmarks/train_sts.py --data ../shared/data --output runs/sts-ese
    ... --no-express | --no-compress          # ablations
    ... --skip-train                          # only re-evaluate an existing --output model
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import os
import sys
import time
from pathlib import Path

import numpy as np

from esrag.encoder import EspressoEncoder
from esrag.encoder.cache import encode_cached, view_of
from esrag.train import TrainConfig, train
from esrag.train.evaluate import spearman

logger = logging.getLogger("train_sts")

LAYERS = [1, 2, 3, 4, 5, 6]
DIMS = [32, 64, 128, 384]


def read_stsb(path: Path) -> dict[str, list[tuple[str, str, float]]]:
    """STS-B rows by split from the csv-module TSV (minimal quoting, as its README says)."""
    splits: dict[str, list[tuple[str, str, float]]] = {}
    with open(path, encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle, delimiter="\t")
        for row in reader:
            splits.setdefault(row["split"], []).append(
                (row["sentence1"], row["sentence2"], float(row["score"]))
            )
    return splits


def write_scored(path: Path, rows: list[tuple[str, str, float]]) -> Path:
    with open(path, "w", encoding="utf-8") as handle:
        for a, b, score in rows:
            if a.strip() and b.strip():
                handle.write(json.dumps({"sentence1": a, "sentence2": b, "score": score}) + "\n")
    return path


def evaluate(
    model: EspressoEncoder, rows: list[tuple[str, str, float]], cache: str | None
) -> dict[str, float]:
    """{"L:D": Spearman} on ``rows``."""
    left = encode_cached(model, [r[0] for r in rows], LAYERS, cache_dir=cache)
    right = encode_cached(model, [r[1] for r in rows], LAYERS, cache_dir=cache)
    gold = np.array([r[2] for r in rows])
    table = {}
    for layer in LAYERS:
        for dim in DIMS:
            a, b = view_of(left, LAYERS, layer, dim), view_of(right, LAYERS, layer, dim)
            table[f"{layer}:{dim}"] = spearman((a * b).sum(axis=1), gold)
    return table


def print_table(before: dict[str, float], after: dict[str, float] | None) -> None:
    full_b = before["6:384"]
    full_a = after["6:384"] if after else float("nan")
    print("| view | Spearman before | after | % of full before | after |")
    print("|---|---|---|---|---|")
    for view, value in before.items():
        new = after[view] if after else float("nan")
        print(f"| {view} | {value:.4f} | {new:.4f} | {value / full_b:.1%} | {new / full_a:.1%} |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=os.environ.get("ESRAG_DATA", "../shared/data"))
    parser.add_argument("--output", default="runs/sts-ese")
    parser.add_argument("--results", default=None, help="JSON results file")
    parser.add_argument("--no-nli", action="store_true", help="STS-B train only")
    parser.add_argument("--epochs", type=float, default=3.0)
    parser.add_argument("--max-steps", type=int, default=None)
    parser.add_argument("--max-examples", type=int, default=None, help="cap per source")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=8e-5)
    parser.add_argument("--max-length", type=int, default=64)
    parser.add_argument("--eval-every", type=int, default=100)
    parser.add_argument("--compress-dim", type=int, default=128)
    parser.add_argument("--no-express", action="store_true")
    parser.add_argument("--no-compress", action="store_true")
    parser.add_argument("--skip-train", action="store_true")
    parser.add_argument("--limit-test", type=int, default=None, help="smoke runs only")
    parser.add_argument("--cache", default=None, help="embedding cache folder")
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    data = Path(args.data)
    splits = read_stsb(data / "stsb" / "stsb.tsv")
    test = splits["test"][: args.limit_test]
    results: dict = {"args": vars(args), "sizes": {k: len(v) for k, v in splits.items()}}

    started = time.perf_counter()
    before = evaluate(EspressoEncoder(device="cpu"), test, args.cache)
    results["before"] = before
    results["before_seconds"] = time.perf_counter() - started

    output = Path(args.output)
    if not args.skip_train:
        work = Path(str(output) + "-data")
        work.mkdir(parents=True, exist_ok=True)
        sources = [str(write_scored(work / "stsb_train.jsonl", splits["train"]))]
        if not args.no_nli:
            sources.append(str(data / "nli" / "snli_dev_test_triplets.csv"))
        dev = write_scored(work / "stsb_dev.jsonl", splits["dev"])
        config = TrainConfig(
            train=tuple(sources),
            eval=(str(dev),),
            output=str(output),
            epochs=args.epochs,
            max_steps=args.max_steps,
            max_examples=args.max_examples,
            batch_size=args.batch_size,
            lr=args.lr,
            max_length=args.max_length,
            eval_every=args.eval_every,
            save_every=args.eval_every,
            compress_dim=args.compress_dim,
            express=not args.no_express,
            compress=not args.no_compress,
            seed=args.seed,
            device="cpu",
            eval_views=("2:384", "6:384"),
        )
        result = train(config)
        results["config"] = config.to_json()
        results["train"] = {k: v for k, v in result.to_json().items() if k != "history"}
        results["train_history"] = result.history
        logger.info("%s", result.summary())

    started = time.perf_counter()
    after = evaluate(EspressoEncoder(output, device="cpu"), test, args.cache)
    results["after"] = after
    results["after_seconds"] = time.perf_counter() - started
    print_table(before, after)
    target = Path(args.results or f"{output}-results.json")
    target.write_text(json.dumps(results, indent=2) + "\n")
    logger.info("results written to %s", target)
    return 0


if __name__ == "__main__":
    sys.exit(main())
