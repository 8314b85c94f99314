"""Real data: the cascade on BEIR SciFact with the default (untrained) all-MiniLM-L6-v2.

Embeddings come from the on-disk cache (``esrag.encoder.cache.encode_cached``), so a CI run
pays the ~6 minute encoding once.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest

from esrag.index import CascadeConfig, CascadeIndex

pytestmark = pytest.mark.data

logger = logging.getLogger(__name__)


@pytest.fixture(scope="module")
def scifact(data_dir: Path, default_encoder: Any) -> dict[str, Any]:
    from esrag.data.beir import load_beir
    from esrag.encoder.cache import encode_cached

    dataset = load_beir(data_dir / "scifact", "test")
    qids = list(dataset.queries)
    docs = encode_cached(default_encoder, dataset.doc_texts())  # (N, 6, 384), every layer
    queries = encode_cached(default_encoder, [dataset.queries[q] for q in qids])
    return {"dataset": dataset, "qids": qids, "docs": docs, "queries": queries}


def _ndcg(scifact: dict[str, Any], index: CascadeIndex, layer: int, mode: str) -> float:
    from esrag.evaluation.metrics import ndcg_at_k

    queries = scifact["queries"]
    result = index.search_embeddings(queries[:, layer - 1], queries[:, -1], k=10, shortlist=100, mode=mode)
    run = dict(zip(scifact["qids"], result.ids, strict=True))
    return ndcg_at_k(run, scifact["dataset"].qrels, 10)


def _index(scifact: dict[str, Any], encoder: Any, layer: int, transform: str) -> CascadeIndex:
    docs = scifact["docs"]
    config = CascadeConfig(coarse_layer=layer, coarse_dim=64, transform=transform)
    return CascadeIndex.build_from_embeddings(
        docs[:, layer - 1],
        docs[:, -1],
        ids=scifact["dataset"].doc_ids,
        config=config,
        embedder=encoder,
    )


def test_scifact_fine_only_and_pca_cascade(scifact: dict[str, Any], default_encoder: Any) -> None:
    index = _index(scifact, default_encoder, 6, "pca")
    fine = _ndcg(scifact, index, 6, "fine")
    cascade = _ndcg(scifact, index, 6, "cascade")
    logger.info(
        "SciFact nDCG@10 fine-only %.4f, L6/64 pca cascade %.4f (%.1f%%)", fine, cascade, 100 * cascade / fine
    )
    assert fine == pytest.approx(0.645, abs=0.005)
    assert cascade >= 0.99 * fine
    # the text query path (one encoder pass, both views) gives the same rankings
    texts = [scifact["dataset"].queries[q] for q in scifact["qids"][:8]]
    from_text = index.search(texts, k=10, shortlist=100)
    cached = index.search_embeddings(
        scifact["queries"][:8, 5], scifact["queries"][:8, 5], k=10, shortlist=100
    )
    assert from_text.ids == cached.ids


@pytest.mark.parametrize(("transform", "low", "high"), [("prefix", 0.25, 0.55), ("adapter", 0.75, 1.0)])
def test_scifact_layer2_transforms(
    scifact: dict[str, Any], default_encoder: Any, transform: str, low: float, high: float
) -> None:
    """Issue reference (untrained model, layer 2, 64 dims, shortlist 100): prefix ~38%, map ~86%."""
    index = _index(scifact, default_encoder, 2, transform)
    fine = _ndcg(scifact, index, 2, "fine")
    cascade = _ndcg(scifact, index, 2, "cascade")
    retention = cascade / fine
    logger.info(
        "SciFact L2/64 %s cascade nDCG@10 %.4f = %.1f%% of fine-only %.4f",
        transform,
        cascade,
        100 * retention,
        fine,
    )
    assert low <= retention <= high
