"""A second domain for the training benchmarks: SNLI premise → hypothesis retrieval, as BEIR.

From ``$ESRAG_DATA/nli/snli_dev_test_pairs.tsv`` (19,666 labelled pairs): the corpus is every
distinct hypothesis, the queries every distinct premise; a premise's entailed hypotheses
are grade 2, its neutral ones grade 1, its contradictions grade 0 (judged, not relevant).
``qrels/train.tsv`` comes from the SNLI *dev* split and ``qrels/test.tsv`` from its *test*
split, so training never sees a test judgment. Graded, several judged documents per query,
and the hardest distractors (the contradictions) share most words with the relevant ones:
the shape of the domain where the earlier recipe made the model worse.

Usage: python benchmarks/build_snli_retrieval.py --data $ESRAG_DATA --output runs/snli-beir
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
from pathlib import Path

GRADES = {"entailment": 2, "neutral": 1, "contradiction": 0}


def build(pairs: Path, output: Path) -> dict[str, int]:
    """Write corpus.jsonl, queries.jsonl and qrels/{train,test}.tsv; return their sizes."""
    premises: dict[str, str] = {}
    hypotheses: dict[str, str] = {}
    qrels: dict[str, dict[tuple[str, str], int]] = {"dev": {}, "test": {}}
    with open(pairs, encoding="utf-8", newline="") as handle:
        for row in csv.DictReader(handle, delimiter="\t"):
            label, split = row["label"], row["split"]
            if label not in GRADES or split not in qrels:
                continue
            qid = premises.setdefault(row["premise"], f"p{len(premises)}")
            did = hypotheses.setdefault(row["hypothesis"], f"h{len(hypotheses)}")
            key = (qid, did)
            qrels[split][key] = max(qrels[split].get(key, 0), GRADES[label])
    (output / "qrels").mkdir(parents=True, exist_ok=True)
    with open(output / "corpus.jsonl", "w", encoding="utf-8") as handle:
        for text, did in hypotheses.items():
            handle.write(json.dumps({"_id": did, "title": "", "text": text}) + "\n")
    with open(output / "queries.jsonl", "w", encoding="utf-8") as handle:
        for text, qid in premises.items():
            handle.write(json.dumps({"_id": qid, "text": text}) + "\n")
    for split, name in (("dev", "train"), ("test", "test")):
        with open(output / "qrels" / f"{name}.tsv", "w", encoding="utf-8") as handle:
            handle.write("query-id\tcorpus-id\tscore\n")
            for (qid, did), grade in qrels[split].items():
                handle.write(f"{qid}\t{did}\t{grade}\n")
    return {
        "docs": len(hypotheses),
        "queries": len(premises),
        "train_judgments": len(qrels["dev"]),
        "test_judgments": len(qrels["test"]),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=os.environ.get("ESRAG_DATA", "../shared/data"))
    parser.add_argument("--output", default="runs/snli-beir")
    args = parser.parse_args(argv)
    sizes = build(Path(args.data) / "nli" / "snli_dev_test_pairs.tsv", Path(args.output))
    print(json.dumps(sizes))
    return 0


if __name__ == "__main__":
    sys.exit(main())
