"""SciFact test evaluation shared by the training benchmarks (esrag and its peers).

For views layer 1..6 × dims 32/64/128/384: flat nDCG@10 of the view alone, and cascade
nDCG@10 (shortlist 100 by the view, reranked by layer 6 / 384 dims of the same model) with
its retention = cascade / full-view nDCG@10; plus the corpus-fitted ``pca``/``adapter``
coarse transforms of ``esrag build --transform`` at 32/64 dims on every layer. Untrained
embeddings come from :func:`esrag.encoder.cache.encode_cached` (pre-filled).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from esrag.data import load_beir
from esrag.data.beir import load_queries
from esrag.encoder import EspressoEncoder
from esrag.encoder.cache import encode_cached, view_of
from esrag.evaluation.metrics import ndcg_at_k
from esrag.index.config import Transform
from esrag.index.transforms import fit_transform

LAYERS = [1, 2, 3, 4, 5, 6]
DIMS = [32, 64, 128, 384]
SHORTLIST = 100


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Column indices of each row's k highest scores, best first."""
    part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(scores, part, axis=1), axis=1, kind="stable")
    return np.take_along_axis(part, order, axis=1)


def evaluate(
    doc_emb: np.ndarray,
    query_emb: np.ndarray,
    doc_ids: list[str],
    query_ids: list[str],
    qrels: dict[str, dict[str, int]],
    *,
    quick: bool = False,
) -> dict[str, dict]:
    """{"L:D": {"flat": nDCG@10, "cascade": nDCG@10, "retention": cascade/full}}
    (``quick``: only layers 2 and 6 at 64/384 dims, the transforms at 64 on layer 2)."""
    full_q = view_of(query_emb, LAYERS, 6, 384)
    full_d = view_of(doc_emb, LAYERS, 6, 384)
    full_scores = full_q @ full_d.T

    def ndcg(ranked: np.ndarray) -> float:
        run = {q: [doc_ids[j] for j in row] for q, row in zip(query_ids, ranked, strict=True)}
        return float(ndcg_at_k(run, qrels, 10))

    full = ndcg(top_k(full_scores, 10))

    def row(scores: np.ndarray) -> dict[str, float]:
        """The view alone (flat) and as a cascade's coarse stage (shortlist, full rerank)."""
        shortlist = top_k(scores, SHORTLIST)
        rerank = np.take_along_axis(full_scores, shortlist, axis=1)
        order = np.argsort(-rerank, axis=1, kind="stable")[:, :10]
        cascade = ndcg(np.take_along_axis(shortlist, order, axis=1))
        return {
            "flat": ndcg(top_k(scores, 10)),
            "cascade": cascade,
            "retention": cascade / full if full else 0.0,
        }

    table: dict[str, dict] = {}
    layers, dims = ([2, 6], [64, 384]) if quick else (LAYERS, DIMS)
    for layer in layers:
        for dim in dims:
            table[f"{layer}:{dim}"] = row(
                view_of(query_emb, LAYERS, layer, dim) @ view_of(doc_emb, LAYERS, layer, dim).T
            )
    # corpus-fitted coarse transforms (what ``esrag build --transform`` uses) on each layer
    for layer in [2] if quick else LAYERS:
        source_d = view_of(doc_emb, LAYERS, layer, 384)
        source_q = view_of(query_emb, LAYERS, layer, 384)
        for kind in (Transform.PCA, Transform.ADAPTER):
            for dim in (64,) if quick else (32, 64):
                fitted = fit_transform(kind, source_d, dim, fine=full_d)
                table[f"{layer}:{dim}:{kind.value}"] = row(fitted(source_q) @ fitted(source_d).T)
    return table


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


def headline(table: dict[str, dict]) -> dict[str, float]:
    """The figures the README compares: full view, L2/64 alone, L2/64 prefix and adapter retention."""
    return {
        "full": table["6:384"]["flat"],
        "l2_64_flat": table["2:64"]["flat"],
        "l2_64_prefix_retention": table["2:64"]["retention"],
        "l2_64_adapter_retention": table["2:64:adapter"]["retention"],
    }
