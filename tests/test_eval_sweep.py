"""Cascade evaluation, sweeps, Pareto front, cost model, plots — on synthetic vectors."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from esrag.evaluation.cascade import evaluate_encoded
from esrag.evaluation.cost import cascade_flops, coarse_flops, fine_flops, transform_flops
from esrag.evaluation.sweep import SweepGrid, SweepPoint, pareto_front, run_sweep
from esrag.evaluation.vectors import fine_vectors, sample_doc_queries

N, H = 300, 16


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope="module")
def vectors() -> tuple[dict[int, np.ndarray], dict[int, np.ndarray]]:
    """Layer 2 = the truth; layer 1 = a noisy copy; queries = noisy copies of 40 documents."""
    rng = np.random.default_rng(0)
    deep = unit(rng.normal(size=(N, H)))
    shallow = unit(deep + 0.6 * rng.normal(size=(N, H)))
    q_deep = unit(deep[:40] + 0.3 * rng.normal(size=(40, H)))
    q_shallow = unit(q_deep + 0.6 * rng.normal(size=(40, H)))
    return {1: shallow, 2: deep}, {1: q_shallow, 2: q_deep}


def doc_ids() -> list[str]:
    return [f"d{i}" for i in range(N)]


def qids() -> list[str]:
    return [f"q{i}" for i in range(40)]


def test_sweep_label_free_exact_points(vectors) -> None:
    docs, queries = vectors
    grid = SweepGrid(layers=(1, 2), dims=(4, 8, 16), transforms=("prefix", "pca"), shortlists=(10, N))
    result = run_sweep(
        docs,
        queries,
        doc_ids=doc_ids(),
        qids=qids(),
        fine_view=(2, H),
        grid=grid,
        target=0.999,
        timing_queries=2,
    )
    assert result.quality_metric == "overlap@10" and result.reference["quality"] == 1.0
    # a full-width pca is a rotation: the index stores it as prefix, so it is skipped
    assert len(result.points) == 2 * 3 * 2 * 2 - 2 * 2
    assert result.settings["skipped"] == [
        "1:16 pca (the index used prefix)",
        "2:16 pca (the index used prefix)",
    ]
    by = {(p.layer, p.dim, p.transform, p.shortlist): p for p in result.points}
    # a shortlist of every document reranks everything exactly: identical to fine-only
    for (_layer, _dim, _t, shortlist), p in by.items():
        if shortlist == N:
            assert p.retention == pytest.approx(1.0)
    # the coarse stage equal to the fine view is exact at any shortlist
    assert by[(2, 16, "prefix", 10)].retention == pytest.approx(1.0)
    # a noisy, narrow coarse stage with a short list loses some of the top 10
    assert by[(1, 4, "prefix", 10)].retention < 0.9
    rec = result.recommended
    assert rec is not None and rec.retention >= 0.999
    cheaper = [p for p in result.points if p.flops_per_query < rec.flops_per_query]
    assert all(p.retention < 0.999 for p in cheaper)
    assert rec.pareto
    front = [p for p in result.points if p.pareto]
    for p in front:  # nothing dominates a front point
        assert not any(
            q.flops_per_query <= p.flops_per_query and q.retention > p.retention for q in result.points
        )
    md = result.to_markdown()
    assert "| layer | dim | transform | shortlist | overlap@10 |" in md and "★" in md
    assert "Recommended" in result.recommendation_text()
    json.dumps(result.to_json())


def test_sweep_with_qrels_and_no_recommendation(vectors) -> None:
    docs, queries = vectors
    qrels = {f"q{i}": {f"d{i}": 1} for i in range(40)}
    grid = SweepGrid(layers=(1,), dims=(2,), transforms=("prefix",), shortlists=(10,))
    result = run_sweep(
        docs,
        queries,
        doc_ids=doc_ids(),
        qids=qids(),
        fine_view=(2, H),
        grid=grid,
        qrels=qrels,
        target=1.0,
        timing_queries=0,
    )
    assert result.quality_metric == "ndcg@10" and result.reference["label_free"] is False
    assert 0.5 < result.reference["quality"] <= 1.0
    (point,) = result.points
    assert set(point.metrics) == {"ndcg@10", "recall@10", "mrr@10"}
    assert result.recommended is None and point.retention < 1.0
    assert "No setting keeps 100.0%" in result.recommendation_text()


def test_sweep_skips_transforms_that_cannot_be_fitted(vectors) -> None:
    docs, queries = vectors
    small = {k: v[:20] for k, v in docs.items()}
    grid = SweepGrid(layers=(1,), dims=(4, 16), transforms=("prefix", "pca"), shortlists=(10,))
    result = run_sweep(
        small, queries, doc_ids=doc_ids()[:20], qids=qids(), fine_view=(2, H), grid=grid, timing_queries=0
    )
    assert {(p.dim, p.transform) for p in result.points} == {(4, "prefix"), (4, "pca"), (16, "prefix")}
    assert result.settings["skipped"] == ["1:16 pca (needs 32 docs to fit)"]


def test_grid_validation_and_default() -> None:
    assert SweepGrid.default(6, 384) == SweepGrid((2, 3, 6), (32, 64, 128))
    assert SweepGrid.default(3, 32).layers == (1, 3)
    with pytest.raises(ValueError, match=r"sweep layer 7 is outside 1\.\.6"):
        SweepGrid((7,), (8,)).validate(6, 384)
    with pytest.raises(ValueError, match="sweep transform 'rot' is not one of"):
        SweepGrid((1,), (8,), ("rot",)).validate(6, 384)
    with pytest.raises(ValueError, match="sweep dim 500 is outside"):
        SweepGrid((1,), (500,)).validate(6, 384)


def point(cost: float, retention: float) -> SweepPoint:
    return SweepPoint(1, 8, "pca", 10, retention, retention, cost / 1000, cost)


def test_pareto_front_hand_made() -> None:
    pts = [point(1, 0.5), point(2, 0.9), point(2, 0.8), point(3, 0.9), point(4, 1.0), point(4, 1.0)]
    assert pareto_front(pts) == {0, 1, 4, 5}
    assert pareto_front(pts, cost="time") == {0, 1, 4, 5}


def test_cost_model() -> None:
    assert fine_flops(1000, 384) == 2 * 1000 * 384
    assert transform_flops("prefix", 384, 64) == 0
    assert transform_flops("pca", 384, 64) == 2 * 384 * 64
    assert coarse_flops("Flat", 1000, 64, shortlist=100) == 2 * 1000 * 64
    assert coarse_flops("HNSW32", 10**6, 64, shortlist=100, ef_search=128) == 2 * 64 * 128 * 64
    assert (
        coarse_flops("IVF100,Flat", 10**4, 8, shortlist=10, nprobe=10)
        == 2 * 8 * 100 + 2 * 8 * 10**4 * 10 / 100
    )
    assert (
        coarse_flops("IVF100,PQ8", 10**4, 8, shortlist=10, nprobe=10)
        == 2 * 8 * 100 + 10 * 256 * 2 * 8 + 10**4 * 10 / 100 * 8
    )
    total = cascade_flops(
        index_type="Flat",
        n_docs=1000,
        transform="pca",
        source_dim=384,
        coarse_dim=64,
        fine_dim=384,
        shortlist=100,
    )
    assert total == 2 * 384 * 64 + 2 * 1000 * 64 + 2 * 100 * 384


def test_evaluate_encoded_cascade_vs_fine(vectors) -> None:
    from esrag.index import CascadeConfig, CascadeIndex

    docs, queries = vectors
    index = CascadeIndex.build_from_embeddings(
        docs[1], docs[2], ids=doc_ids(), config=CascadeConfig(coarse_dim=4, transform="prefix", shortlist=20)
    )
    qrels = {f"q{i}": {f"d{i}": 1} for i in range(40)}
    ev = evaluate_encoded(index, queries[1], queries[2], qids(), qrels, timing_queries=5)
    out = ev.to_json()
    assert set(out) == {"cascade", "fine", "retention", "num_queries"}
    for stage in ("cascade", "fine"):
        assert {
            "ndcg@10",
            "recall@10",
            "recall@100",
            "mrr@10",
            "latency_ms_p50",
            "latency_ms_p95",
            "settings",
        } <= set(out[stage])
        assert out[stage]["latency_ms_p95"] >= out[stage]["latency_ms_p50"] > 0
    assert out["cascade"]["settings"]["shortlist"] == 20
    assert out["cascade"]["settings"]["transform"] == "prefix"
    assert out["fine"]["ndcg@10"] >= out["cascade"]["ndcg@10"]
    assert "| ndcg@10 |" in ev.to_markdown()
    exact = evaluate_encoded(index, queries[1], queries[2], qids(), qrels, shortlist=N, timing_queries=0)
    assert exact.cascade.metrics == exact.fine.metrics and exact.retention == 1.0


def test_fine_vectors_and_doc_queries() -> None:
    x = np.array([[3.0, 4.0, 12.0]], dtype=np.float32)
    assert np.allclose(fine_vectors(x, 2), [[0.6, 0.8]])
    texts = ["One two three four five six seven eight. Nine ten eleven twelve.", "tiny"]
    a = sample_doc_queries(texts, 5, seed=1)
    assert a == sample_doc_queries(texts, 5, seed=1) and len(a) == 2
    for q in a:
        assert q == "tiny" or q in texts[0]
    with pytest.raises(ValueError, match="empty corpus"):
        sample_doc_queries([], 3)


def test_plot(vectors, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("matplotlib")
    from esrag.evaluation.plot import plot_sweep

    docs, queries = vectors
    grid = SweepGrid(layers=(1, 2), dims=(4,), transforms=("prefix", "pca"), shortlists=(10,))
    result = run_sweep(
        docs, queries, doc_ids=doc_ids(), qids=qids(), fine_view=(2, H), grid=grid, timing_queries=1
    )
    path = plot_sweep(result, tmp_path / "p" / "sweep.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(ImportError, match=r"pip install esrag\[plot\]"):
        plot_sweep(result, tmp_path / "q.png")
