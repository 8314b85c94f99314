"""Shallow queries after query training, on BEIR SciFact test: base vs trained models (run by hand).

Usage:
    ESRAG_DATA=../shared/data python benchmarks/train_shallow_query.py \
        --model distill=runs/qt/distill --model contrastive=runs/qt/contrastive \
        [--train-result distill=runs/qt/distill.json ...] [--max-docs 1500] [--max-length 128] \
        [--query-layers 2,3] [--out benchmarks/results/train_shallow_query.json]

Every model (the shipped all-MiniLM-L6-v2 ``base`` first, then each ``--model NAME=FOLDER``)
encodes the same documents and test queries (every layer, through ``$ESRAG_CACHE``), in this
process. Per model: the full-depth exact search (layer-6 queries against layer-6 documents)
and, for each query layer k, the layer-k query against the same layer-6 documents through
esrag's own index (``CascadeIndex`` with ``query_layer=k``, fine-only exact search): the
vector as it is (``query_map="none"``, what a query-trained model is served with) and the
corpus-fitted ridge map (``query_map="ridge"``). Each is reported as nDCG@10, as a share of
the same model's full depth, and as a share of the base model's full depth (the documents'
quality after training). ``--max-docs`` keeps every test-judged document plus a seeded random
sample of the rest (a smaller corpus than BEIR's: absolute nDCG is higher than on the full
corpus; the shares compare models on the same documents). Training results (``esrag train
--json`` output) add each model's training CPU seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _env import environment


def _pairs(values: list[str], flag: str) -> dict[str, str]:
    out = {}
    for value in values:
        name, sep, path = value.partition("=")
        if not sep or not name or not path:
            raise SystemExit(f"{flag} must look like NAME=PATH, got {value!r}")
        out[name] = path
    return out


class Corpus:
    """The test queries, their qrels and the (possibly sampled) documents."""

    def __init__(self, data: Path, max_docs: int | None, seed: int) -> None:
        from esrag.data.beir import load_beir

        dataset = load_beir(data / "scifact", "test")
        self.qrels = dataset.qrels
        self.qids = [q for q in dataset.queries if q in self.qrels]
        self.queries = [dataset.queries[q] for q in self.qids]
        ids = list(dataset.doc_ids)
        if max_docs is not None and max_docs < len(ids):
            judged = {d for grades in self.qrels.values() for d in grades}
            rest = [d for d in ids if d not in judged]
            keep = judged | set(random.Random(seed).sample(rest, max(0, max_docs - len(judged))))
            ids = [d for d in ids if d in keep]
        self.doc_ids = ids
        texts = dict(zip(dataset.doc_ids, dataset.doc_texts(), strict=True))
        self.docs = [texts[d] for d in ids]

    def ndcg(self, ids: list[list[str]]) -> float:
        from esrag.evaluation.metrics import ndcg_at_k

        return ndcg_at_k(dict(zip(self.qids, ids, strict=True)), self.qrels, 10)


def _layer(stacked: np.ndarray, layer: int) -> np.ndarray:
    return np.ascontiguousarray(stacked[:, layer - 1, :])


def measure(name: str, folder: str | None, corpus: Corpus, layers: list[int], max_length: int | None) -> dict:
    """Full depth and every (query layer, map) of one model."""
    from esrag.encoder import EspressoEncoder
    from esrag.encoder.cache import encode_cached
    from esrag.index import CascadeConfig, CascadeIndex
    from esrag.train.defaults import encoding_length

    encoder = EspressoEncoder(folder, device="cpu")
    started = time.perf_counter()
    with encoding_length(encoder, max_length or encoder.max_length):
        docs = encode_cached(encoder, corpus.docs, show_progress_bar=False)
        queries = encode_cached(encoder, corpus.queries, show_progress_bar=False)
    encode_seconds = time.perf_counter() - started
    last = encoder.num_layers
    deep_docs, deep_queries = _layer(docs, last), _layer(queries, last)
    top = np.argsort(-(deep_queries @ deep_docs.T), axis=1, kind="stable")[:, :10]
    full = corpus.ndcg([[corpus.doc_ids[j] for j in row] for row in top])
    rows = []
    for k in layers:
        for kind in ("none", "ridge"):
            config = CascadeConfig(
                coarse_layer=last, coarse_dim=64, transform="prefix", query_layer=k, query_map=kind
            )
            index = CascadeIndex.build_from_embeddings(
                deep_docs, deep_docs, ids=corpus.doc_ids, config=config, query_source=_layer(docs, k)
            )
            assert index.query_map is not None and index.query_map.kind.value == kind
            source, fine = index.query_map.map_vectors(_layer(queries, k))
            ids = index.search_embeddings(source, fine, k=10, mode="fine").ids
            rows.append({"query_layer": k, "map": kind, "ndcg": corpus.ndcg(ids), "retention": None})
    for row in rows:
        row["retention"] = row["ndcg"] / full
    return {"name": name, "model": folder, "full": full, "shallow": rows, "encode_seconds": encode_seconds}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", action="append", default=[], help="NAME=FOLDER of a trained model")
    parser.add_argument("--train-result", action="append", default=[], help="NAME=esrag train --json output")
    parser.add_argument("--data", default=None, help="data folder (default $ESRAG_DATA)")
    parser.add_argument("--query-layers", default="2,3")
    parser.add_argument("--max-docs", type=int, default=None, help="judged test documents + a sample")
    parser.add_argument("--max-length", type=int, default=None, help="tokens per text (default the model's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="write the results as JSON here")
    args = parser.parse_args(argv)
    data = Path(args.data or os.environ.get("ESRAG_DATA", "../shared/data"))
    corpus = Corpus(data, args.max_docs, args.seed)
    layers = [int(k) for k in args.query_layers.split(",")]
    trained = _pairs(args.train_result, "--train-result")
    models: list[dict[str, Any]] = []
    for name, folder in [("base", None), *_pairs(args.model, "--model").items()]:
        result = measure(name, folder, corpus, layers, args.max_length)
        if name in trained:
            run = json.loads(Path(trained[name]).read_text())
            result["train"] = {key: run.get(key) for key in ("steps", "cpu_seconds", "seconds", "kept_base")}
            result["train"]["config"] = run.get("config")
        models.append(result)
        print(f"{name}: full depth nDCG@10 {result['full']:.4f}", flush=True)
    base = models[0]["full"]
    lines = [
        f"SciFact test, {len(corpus.qids)} queries, {len(corpus.doc_ids)} documents"
        + (f" (every judged one + a seeded sample, --max-docs {args.max_docs})" if args.max_docs else "")
        + f"; max_length {args.max_length or 'model default'}; base full-depth nDCG@10 {base:.4f}",
        "",
        "| model | query | nDCG@10 | share of its full depth | share of base full depth | train CPU-s |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for m in models:
        cpu = m.get("train", {}).get("cpu_seconds")
        cpu_text = "" if cpu is None else f"{cpu:.0f}"
        share = f"{m['full'] / base:.1%}"
        lines.append(f"| {m['name']} | full depth (L6) | {m['full']:.4f} | 100% | {share} | {cpu_text} |")
        for r in m["shallow"]:
            lines.append(
                f"| {m['name']} | L{r['query_layer']} {r['map']} | {r['ndcg']:.4f} | {r['retention']:.1%} "
                f"| {r['ndcg'] / base:.1%} | |"
            )
    lines += ["", "environment: " + environment()]
    print("\n".join(lines))
    if args.out:
        payload = {"args": vars(args), "base_full": base, "models": models, "table": lines}
        Path(args.out).write_text(json.dumps(payload, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
