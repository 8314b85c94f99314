"""ESE domain fine-tuning on BEIR SciFact with esrag's defaults: test quality before vs after.

The run is the README's recipe and nothing else::

    esrag train --train $ESRAG_DATA/scifact --corpus-pairs title --max-examples 2000 \
        --hard-negatives --output runs/scifact-ese

i.e. SciFact *train* qrels (10% of the train queries held out by the trainer itself for
checkpoint selection) + up to 2,000 corpus title → text pairs, one hard negative per pair
mined with the base model; steps, warmup, max length and evaluation cadence chosen by the
trainer from the data. The *test* qrels are used only here, for the final evaluation
(:mod:`scifact_eval`).

``--export-data FILE`` also writes the exact training rows (after the held-out split and
mining) and the run's steps and batch size as JSON, for the peers on the same budget
(``benchmarks/peer_st.py``, ``benchmarks/peer_angle.py``).

Usage (from the repository root; heavy: run it nice'd)::

    ESRAG_DATA=../shared/data nice python benchmarks/train_scifact.py --output runs/scifact-ese \
        --results benchmarks/results/train_scifact_default.json --export-data runs/scifact-rows.json
    ... --skip-train --output MODEL [--pooling mean]   # only evaluate an existing model
    ... --beir runs/snli-beir --plain                  # another BEIR folder, every default
    ... --seed 43 --set compress=true                  # another seed / an ablation

``benchmarks/paired_scifact.py`` then tells a real difference between two runs from query noise.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import sys
import time
from pathlib import Path

from scifact_eval import embed, evaluate, headline, print_table

from esrag.encoder import EspressoEncoder
from esrag.train import TrainConfig, train
from esrag.train.data import load_sources
from esrag.train.prepare import prepare

logger = logging.getLogger("train_scifact")


def recipe(folder: Path, output: str, seed: int, *, plain: bool = False) -> TrainConfig:
    """The README's SciFact recipe: data options only, every training knob at its default
    (``plain``: not even those, ``esrag train --train FOLDER --output OUTPUT``)."""
    if plain:
        return TrainConfig(train=(str(folder),), output=output, seed=seed, device="cpu")
    return TrainConfig(
        train=(str(folder),),
        output=output,
        corpus_pairs="title",
        max_examples=2000,
        hard_negatives=True,
        seed=seed,
        device="cpu",
    )


def with_overrides(config: TrainConfig, overrides: list[str]) -> TrainConfig:
    """``config`` with ``FIELD=JSON`` overrides (a bare word is taken as a string)."""
    values = config.to_json()
    for item in overrides:
        name, sep, raw = item.partition("=")
        if not sep or name not in values:
            raise SystemExit(f"--set expects FIELD=VALUE with a TrainConfig field, got {item!r}")
        try:
            values[name] = json.loads(raw)
        except json.JSONDecodeError:
            values[name] = raw
    return TrainConfig.from_json(values)


def export_rows(config: TrainConfig, path: Path) -> dict:
    """The training rows a run of ``config`` trains on (held-out split, mined negatives)."""
    base = EspressoEncoder(config.base, device="cpu")
    data = prepare(config, load_sources(config), base, None)
    rows = [
        {"anchor": a, "positive": p, **({"negative": n} if ex.negatives else {})}
        for ex in data.train
        for a, p, n in zip(ex.anchors, ex.positives, ex.negatives or [None] * len(ex), strict=True)
    ]
    info = {
        "rows": rows,
        "sources": [len(ex) for ex in data.train],
        "steps": data.settings.total_steps,
        "batch_size": config.batch_size,
        "max_length": data.settings.max_length,
        "warmup_steps": data.settings.warmup_steps,
        "lr": config.lr,
        "heldout_queries": len(data.holdout),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(info) + "\n")
    logger.info("wrote %d training rows to %s", len(rows), path)
    return {k: v for k, v in info.items() if k != "rows"}


def _cpu_seconds() -> float:
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=os.environ.get("ESRAG_DATA", "../shared/data"))
    parser.add_argument("--output", default="runs/scifact-ese")
    parser.add_argument("--beir", default=None, help="another BEIR folder (default: SciFact)")
    parser.add_argument("--plain", action="store_true", help="no data options: every default")
    parser.add_argument("--results", default=None, help="JSON results file")
    parser.add_argument("--export-data", default=None, help="write the training rows here (for peers)")
    parser.add_argument("--skip-train", action="store_true", help="only evaluate the model in --output")
    parser.add_argument("--pooling", default=None, help="pooling of a --skip-train model (mean/cls)")
    parser.add_argument("--cache", default=None, help="embedding cache folder")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--limit-docs", type=int, default=None, help="smoke runs only")
    parser.add_argument("--quick", action="store_true", help="score only the headline views")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="FIELD=JSON",
        help="override one TrainConfig field of the recipe (an ablation), e.g. express_reduction='\"mean\"'",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    folder = Path(args.beir) if args.beir else Path(args.data) / "scifact"
    results: dict = {"args": vars(args)}

    base = EspressoEncoder(device="cpu")
    results["before"] = evaluate(*embed(base, folder, args.cache, args.limit_docs), quick=args.quick)
    del base

    config = with_overrides(recipe(folder, args.output, args.seed, plain=args.plain), args.set)
    if args.export_data:
        results["exported"] = export_rows(config, Path(args.export_data))
    if not args.skip_train:
        started, cpu = time.perf_counter(), _cpu_seconds()
        result = train(config)
        results["config"] = config.to_json()
        results["train"] = {k: v for k, v in result.to_json().items() if k != "history"}
        results["train"]["wall_seconds"] = time.perf_counter() - started
        results["train"]["process_cpu_seconds"] = _cpu_seconds() - cpu
        results["train_history"] = result.history
        logger.info("%s", result.summary())

    trained = EspressoEncoder(args.output, device="cpu", pooling=args.pooling)
    results["after"] = evaluate(*embed(trained, folder, args.cache, args.limit_docs), quick=args.quick)
    results["headline"] = {"before": headline(results["before"]), "after": headline(results["after"])}
    print_table(results["before"], results["after"])
    print(json.dumps(results["headline"], indent=2))
    target = Path(args.results or f"{args.output}-results.json")
    target.write_text(json.dumps(results, indent=2) + "\n")
    logger.info("results written to %s", target)
    return 0


if __name__ == "__main__":
    sys.exit(main())
