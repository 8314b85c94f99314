"""Evaluate a cascade on your own labelled queries: cascade vs exact full-model search.

    python examples/evaluate_cascade.py [--model PATH]
Put your own corpus, queries and relevant document ids in place of the examples below.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from esrag.data.corpus import read_corpus
from esrag.encoder import EspressoEncoder
from esrag.evaluation.cascade import evaluate_cascade
from esrag.index import CascadeConfig, CascadeIndex

HERE = Path(__file__).resolve().parent

# query → relevant document ids (grade 1); graded relevance works too: {"doc": 2}.
MY_QUERIES = {
    "what gives espresso its foam": ["coffee-01"],
    "how far does light travel in a year": ["astronomy-02"],
    "how to keep a steak juicy": ["cooking-04"],
    "fast membership test in python": ["programming-01"],
    "rerank a shortlist with a better model": ["retrieval-03"],
    "why do we sleep": ["biology-09"],
    "when did the berlin wall fall": ["history-06"],
    "how many keys does a piano have": ["music-00"],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="model folder (default: the shipped one)")
    args = parser.parse_args()

    encoder = EspressoEncoder(args.model)
    docs = list(read_corpus(HERE / "data" / "quickstart.jsonl"))
    index = CascadeIndex.build(
        encoder,
        [d.text for d in docs],
        ids=[d.id for d in docs],
        config=CascadeConfig(coarse_layer=2, coarse_dim=16, transform="prefix"),
    )
    queries = {f"q{i}": text for i, text in enumerate(MY_QUERIES)}
    qrels = {f"q{i}": dict.fromkeys(rel, 1) for i, rel in enumerate(MY_QUERIES.values())}
    for shortlist in (5, 20):
        result = evaluate_cascade(index, queries, qrels, shortlist=shortlist)
        print(
            f"\nlayer-2 / 16-dim prefix coarse stage, shortlist {shortlist}: "
            f"retention {result.retention:.1%} of the fine-only nDCG@10"
        )
        print(result.to_markdown())


if __name__ == "__main__":
    main()
