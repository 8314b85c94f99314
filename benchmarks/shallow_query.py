"""Shallow queries against deep documents on BEIR SciFact test: what each setting keeps (run by hand).

Usage:
    ESRAG_DATA=../shared/data python benchmarks/shallow_query.py [--model runs/my-model]
        [--query-layers 1,2,3] [--maps ridge,none] [--variants] [--out results.json]

Every layer of the corpus and of the test queries is encoded once through the embedding cache
(``$ESRAG_CACHE``; a new model takes a few minutes on CPU). The reference is the same model's
full-depth exact search (fine view 6:384 by default); every setting is reported as nDCG@10
and as a share of it. Settings, all through esrag's own index (``CascadeIndex`` with
``query_layer``, its query map fitted on the corpus at index time, as ``esrag build
--query-layer K`` does):

* full-depth cascades (coarse layer 6, pca, 64 / 128 dims; shortlists 100 / 300);
* for each query layer k and map (``ridge``: label-free, fitted on the documents' layer-k
  vectors; ``none``: the layer-k vector as it is, for a model trained for shallow queries):
  exact fine-only search with the shallow query, the 6/128 pca cascade, and a cascade whose
  coarse stage is layer k itself (its coarse source is then exact; only the fine query is
  mapped).

``--variants`` adds label-free maps esrag does not build (for orientation): ridge fitted on
the documents plus their first sentences (query-like text, costs an extra encoding), and
ridge from the concatenated layers 1..k (free in the query's pass).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _env import environment


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)).astype(np.float32)


class Bench:
    """The encoded corpus and queries, and nDCG@10 of a run."""

    def __init__(self, args: argparse.Namespace) -> None:
        from esrag.data.beir import load_beir
        from esrag.encoder import EspressoEncoder
        from esrag.encoder.cache import encode_cached

        data = Path(args.data or os.environ.get("ESRAG_DATA", "../shared/data"))
        self.dataset = load_beir(data / "scifact", "test")
        self.encoder = EspressoEncoder(args.model, device="cpu")
        self.docs = encode_cached(self.encoder, self.dataset.doc_texts(), show_progress_bar=True)
        self.qids = list(self.dataset.queries)
        texts = [self.dataset.queries[q] for q in self.qids]
        self.queries = encode_cached(self.encoder, texts, show_progress_bar=True)
        self.doc_ids = list(self.dataset.doc_ids)
        self.fine_layer, self.fine_dim = args.fine_layer, args.fine_dim
        self.fine_docs = _unit(self.layer(self.docs, self.fine_layer)[:, : self.fine_dim])

    def layer(self, stacked: np.ndarray, layer: int) -> np.ndarray:
        return np.ascontiguousarray(stacked[:, layer - 1, :])

    def ndcg(self, ids: list[list[str]]) -> float:
        from esrag.evaluation.metrics import ndcg_at_k

        return ndcg_at_k(dict(zip(self.qids, ids, strict=True)), self.dataset.qrels, 10)

    def index(
        self, coarse_layer: int, dim: int, query_layer: int | None = None, kind: str | None = None
    ) -> Any:
        from esrag.index import CascadeConfig, CascadeIndex

        config = CascadeConfig(
            coarse_layer=coarse_layer,
            coarse_dim=dim,
            transform="pca",
            fine_view=(self.fine_layer, self.fine_dim),
            query_layer=query_layer,
            query_map=kind,
        )
        shallow = None if query_layer is None else self.layer(self.docs, query_layer)
        return CascadeIndex.build_from_embeddings(
            self.layer(self.docs, coarse_layer),
            self.fine_docs,
            ids=self.doc_ids,
            config=config,
            query_source=shallow,
        )

    def run(self, index: Any, query_layer: int | None, shortlist: int, mode: str = "cascade") -> float:
        coarse_layer = index.config.coarse_layer
        if index.query_map is None:
            source = self.layer(self.queries, coarse_layer)
            fine = _unit(self.layer(self.queries, self.fine_layer)[:, : self.fine_dim])
        else:
            exact = self.layer(self.queries, coarse_layer) if index.query_map.exact_source else None
            source, fine = index.query_map.map_vectors(self.layer(self.queries, query_layer), exact)
        return self.ndcg(index.search_embeddings(source, fine, k=10, shortlist=shortlist, mode=mode).ids)


def variants(bench: Bench, layers: list[int], ridge: float) -> list[dict[str, Any]]:
    """Label-free maps esrag does not build, exact fine-only search (orientation only)."""
    from esrag.encoder.cache import encode_cached
    from esrag.index.query import LinearMap

    first = [re.split(r"(?<=[.!?])\s+", d.text)[0] for d in bench.dataset.corpus.values()]
    sentences = encode_cached(bench.encoder, first, batch_size=64, show_progress_bar=True)
    target = bench.layer(bench.docs, bench.fine_layer)[:, : bench.fine_dim]
    target_s = bench.layer(sentences, bench.fine_layer)[:, : bench.fine_dim]
    out = []
    for k in layers:
        fitted = LinearMap.ridge(
            np.concatenate([bench.layer(bench.docs, k), bench.layer(sentences, k)]),
            np.concatenate([target, target_s]),
            ridge,
        )
        q = fitted(bench.layer(bench.queries, k))
        out.append(
            {"name": f"ridge on documents + first sentences, query layer {k}", "ndcg": _flat(bench, q)}
        )
        stack = np.concatenate([bench.docs[:, i, :] for i in range(k)], axis=1)
        stacked = LinearMap.ridge(stack, target, ridge)
        q = stacked(np.concatenate([bench.queries[:, i, :] for i in range(k)], axis=1))
        out.append({"name": f"ridge from layers 1..{k} concatenated", "ndcg": _flat(bench, q)})
    return out


def _flat(bench: Bench, queries: np.ndarray) -> float:
    top = np.argsort(-(_unit(queries) @ bench.fine_docs.T), axis=1)[:, :10]
    return bench.ndcg([[bench.doc_ids[j] for j in row] for row in top])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None, help="model folder (default: the shipped all-MiniLM-L6-v2)")
    parser.add_argument("--data", default=None, help="data folder (default $ESRAG_DATA)")
    parser.add_argument("--query-layers", default="1,2,3")
    parser.add_argument("--maps", default="ridge,none")
    parser.add_argument("--fine-layer", type=int, default=6)
    parser.add_argument("--fine-dim", type=int, default=384)
    parser.add_argument(
        "--variants", action="store_true", help="also the label-free maps esrag does not build"
    )
    parser.add_argument("--out", default=None, help="write the results as JSON here")
    args = parser.parse_args(argv)
    bench = Bench(args)
    reference = _flat(bench, bench.layer(bench.queries, bench.fine_layer)[:, : bench.fine_dim])
    rows: list[dict[str, Any]] = []

    def add(name: str, value: float) -> None:
        rows.append({"name": name, "ndcg": value, "retention": value / reference})
        print(f"{name}: nDCG@10 {value:.4f} = {value / reference:.1%}", flush=True)

    for dim, shortlist in ((64, 100), (128, 300)):
        add(
            f"full depth, cascade L{bench.fine_layer}/{dim} pca s{shortlist}",
            bench.run(bench.index(bench.fine_layer, dim), None, shortlist),
        )
    for k in map(int, args.query_layers.split(",")):
        for kind in args.maps.split(","):
            deep = bench.index(bench.fine_layer, 128, k, kind)
            add(f"query L{k} {kind}, exact fine-only", bench.run(deep, k, 10, mode="fine"))
            add(f"query L{k} {kind}, cascade L{bench.fine_layer}/128 pca s300", bench.run(deep, k, 300))
            own = bench.index(k, 128, k, kind)
            add(f"query L{k} {kind}, cascade L{k}/128 pca s300 (exact coarse source)", bench.run(own, k, 300))
    if args.variants:
        for row in variants(bench, list(map(int, args.query_layers.split(","))), 0.01):
            add(row["name"] + ", exact fine-only", row["ndcg"])
    lines = [
        f"SciFact test, {len(bench.qids)} queries, {len(bench.doc_ids)} docs; model {bench.encoder.name}; "
        f"reference: full-depth exact search ({bench.fine_layer}:{bench.fine_dim}) nDCG@10 = {reference:.4f}",
        "",
        "| setting | nDCG@10 | share of full depth |",
        "|---|---:|---:|",
        *(f"| {r['name']} | {r['ndcg']:.4f} | {r['retention']:.1%} |" for r in rows),
        "",
        "environment: " + environment(),
    ]
    print("\n".join(lines))
    if args.out:
        Path(args.out).write_text(
            json.dumps({"args": vars(args), "reference_ndcg": reference, "results": rows}, indent=2) + "\n"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
