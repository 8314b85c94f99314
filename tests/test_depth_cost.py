"""End-to-end cost model: encoder FLOPs against hand-computed values on the tiny BERT, measured
encoder cost per layer, eval's end-to-end figures, and sweeps with query and fine layers."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from esrag.evaluation.cost import EncoderShape, encoder_flops, layer_flops, query_map_flops
from esrag.evaluation.encoder_cost import EncoderCost, elastic_encoder, measure_encoder_cost, token_counts
from esrag.evaluation.sweep import SweepGrid, run_sweep
from esrag.index import CascadeConfig

# the tiny BERT of conftest.py: 3 layers, hidden 32, intermediate 64, 4 heads
TINY = EncoderShape(layers=3, hidden=32, intermediate=64, heads=4)


def test_shape_from_the_model_config(tiny_encoder: Any) -> None:
    assert EncoderShape.of(tiny_encoder.model.config) == TINY


def test_encoder_flops_by_hand(tiny_encoder: Any) -> None:
    text = "the cat sees the dog"
    assert token_counts(tiny_encoder, [text]) == [7]  # [CLS] the cat sees the dog [SEP]
    # one layer, n = 7 tokens, h = 32, i = 64, a = 4 heads:
    #   Q, K, V, output projections 8·n·h² = 8·7·1024      = 57,344
    #   feed-forward             4·n·h·i = 4·7·32·64      = 57,344
    #   scores + weighted values 4·n²·h  = 4·49·32        =  6,272
    #   scale + softmax          4·a·n²  = 4·4·49         =    784
    assert layer_flops(TINY, 7) == 57_344 + 57_344 + 6_272 + 784 == 121_744
    assert encoder_flops(TINY, [7], 2) == 2 * 121_744
    assert encoder_flops(TINY, [7], 0) == 0.0
    # averaged per text (the n² terms: not the cost at the mean length)
    assert encoder_flops(TINY, [3, 11], 1) == (layer_flops(TINY, 3) + layer_flops(TINY, 11)) / 2
    with pytest.raises(ValueError, match=r"layer 4 is outside 0\.\.3"):
        encoder_flops(TINY, [7], 4)
    assert encoder_flops(TINY, [], 3) == 0.0


def test_encoder_flops_match_torch_counter_on_the_projections(tiny_encoder: Any) -> None:
    """torch's FLOP counter sees the linear layers (it skips CPU attention): they agree exactly."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    features = {
        k: v for k, v in tiny_encoder.tokenize(["the cat sees the dog"]).items() if k != "num_truncated"
    }
    projections = 8 * 7 * 32**2 + 4 * 7 * 32 * 64
    pooler = 2 * 32 * 32  # BertModel's pooler runs once on [CLS]; esrag does not use it
    for layer in (1, 2, 3):
        with FlopCounterMode(display=False) as counter, torch.inference_mode():
            tiny_encoder.pooled_layers(features, [layer])
        assert counter.get_total_flops() == layer * projections + pooler


def test_query_map_flops() -> None:
    assert query_map_flops(None, False, 384, 384, 384) == 0.0
    assert query_map_flops("none", False, 384, 384, 384) == 0.0
    assert query_map_flops("ridge", True, 384, 384, 128) == 2 * 384 * 128
    assert query_map_flops("ridge", False, 384, 384, 128) == 2 * 384 * 128 + 2 * 384 * 384


def test_measure_encoder_cost(tiny_encoder: Any) -> None:
    queries = ["the cat sees the dog", "a gene", "fast search of the index with a query vector"]
    docs = ["the protein binds the cell", "music of the river city"]
    cost = measure_encoder_cost(tiny_encoder, queries, docs, [3, 1], timing_queries=2, timing_docs=2)
    tokens = token_counts(tiny_encoder, queries)
    assert cost.shape == TINY
    assert cost.query_flops == {layer: encoder_flops(TINY, tokens, layer) for layer in (1, 3)}
    assert cost.query_flops[3] == 3 * cost.query_flops[1]
    assert set(cost.query_ms) == set(cost.doc_ms) == {1, 3} and all(v > 0 for v in cost.query_ms.values())
    assert cost.query_ms_p95[3] >= cost.query_ms[3]
    assert cost.settings["timing_queries"] == 2 and cost.settings["torch_threads"] >= 1
    assert cost.query(3) == (cost.query_flops[3], cost.query_ms[3])
    json.dumps(cost.to_json())
    untimed = measure_encoder_cost(tiny_encoder, queries, docs, [2], timing_queries=0, timing_docs=0)
    assert untimed.query_ms == {} and untimed.query(2) == (untimed.query_flops[2], 0.0)
    assert elastic_encoder(tiny_encoder) is tiny_encoder and elastic_encoder(object()) is None


# ------------------------------------------------------------------------- sweeps
N, H = 300, 16


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope="module")
def layered() -> tuple[dict[int, np.ndarray], dict[int, np.ndarray]]:
    """Layer 3 = the truth; layer 2 = an exact linear image of it (a rotation: the ridge map
    recovers it); layer 1 = noise. Queries: noisy copies of 40 documents, through the same maps.
    """
    rng = np.random.default_rng(1)
    deep = unit(rng.normal(size=(N, H)))
    rotation = np.linalg.qr(rng.normal(size=(H, H)))[0]
    q_deep = unit(deep[:40] + 0.3 * rng.normal(size=(40, H)))
    docs = {3: deep, 2: unit(deep @ rotation), 1: unit(rng.normal(size=(N, H)))}
    queries = {3: q_deep, 2: unit(q_deep @ rotation), 1: unit(rng.normal(size=(40, H)))}
    return docs, queries


EXACT = CascadeConfig(adapter_ridge=1e-6)  # (almost) no shrinkage: a linear relation is recovered exactly


def fake_cost() -> EncoderCost:
    """Each layer costs 1 MFLOP / 1 ms per query, 10 MFLOPs / 10 ms per document."""
    return EncoderCost(
        TINY,
        {layer: 1e6 * layer for layer in (1, 2, 3)},
        {layer: 1e7 * layer for layer in (1, 2, 3)},
        {layer: 1.0 * layer for layer in (1, 2, 3)},
        {layer: 1.5 * layer for layer in (1, 2, 3)},
        {layer: 10.0 * layer for layer in (1, 2, 3)},
    )


def test_sweep_end_to_end_with_shallow_queries(layered) -> None:
    docs, queries = layered
    grid = SweepGrid(
        layers=(2, 3),
        dims=(H,),
        transforms=("prefix",),
        shortlists=(N,),
        query_layers=(1, 2, 3),
        query_maps=("ridge", "none"),
    )
    ids, qids = [f"d{i}" for i in range(N)], [f"q{i}" for i in range(40)]
    result = run_sweep(
        docs,
        queries,
        doc_ids=ids,
        qids=qids,
        fine_view=(3, H),
        grid=grid,
        target=0.99,
        timing_queries=2,
        encoder_cost=fake_cost(),
        base_config=EXACT,
    )
    by = {(p.layer, p.query_layer, p.query_map): p for p in result.points}
    # full depth, query layers 1 and 2 with two maps each (3 is the fine layer: full depth), per coarse layer
    assert len(result.points) == 2 * (1 + 2 * 2)
    full = by[(3, 0, "")]
    assert full.retention == pytest.approx(1.0) and full.query_depth == 3 and full.fine_layer == 3
    assert (full.encoder_flops, full.encoder_ms_p50) == (3e6, 3.0)
    assert full.end_to_end_flops == 3e6 + full.flops_per_query
    assert (full.ingest_flops_per_doc, full.ingest_ms_per_doc) == (3e7, 30.0)
    # layer 2 is a rotation of layer 3: the ridge map recovers it, the shallow query keeps everything
    ridge = by[(3, 2, "ridge")]
    assert ridge.retention == pytest.approx(1.0) and ridge.query_depth == 2 and ridge.encoder_flops == 2e6
    assert ridge.flops_per_query > full.flops_per_query  # the two ridge maps (source and fine)
    assert by[(3, 2, "none")].retention < 0.5  # the rotated vector as it is: lost
    assert by[(3, 1, "ridge")].retention < 0.5  # noise cannot be mapped
    # the coarse source at layer 2 <= query layer 2 is exact: only the fine map is applied
    exact = by[(2, 2, "ridge")]
    assert exact.retention == pytest.approx(1.0)
    assert exact.flops_per_query - full.flops_per_query == pytest.approx(2 * H * H, abs=1)
    # cheapest end to end at 99%: the layer-2 shallow query (2 < 3 encoder MFLOPs)
    rec = result.recommended
    assert rec is not None and rec.query_layer == 2 and rec.query_map == "ridge"
    assert all(p.end_to_end_flops >= rec.end_to_end_flops for p in result.points if p.retention >= 0.99)
    assert result.reference["end_to_end_flops"] == 3e6 + 2 * N * H
    assert result.reference["encoder_ms_p50"] == 3.0
    text = result.recommendation_text()
    assert "queries to layer 2 (ridge map)" in text and "ingest" in text
    md = result.to_markdown()
    assert "| L2 ridge |" in md and "end to end" in md
    data = json.loads(json.dumps(result.to_json()))
    assert data["recommended"]["end_to_end_flops"] == rec.end_to_end_flops
    assert data["settings"]["encoder_timed"] is True
    # by measured time the same point wins (1 ms per layer)
    timed = run_sweep(
        docs,
        queries,
        doc_ids=ids,
        qids=qids,
        fine_view=(3, H),
        grid=grid,
        target=0.99,
        timing_queries=2,
        encoder_cost=fake_cost(),
        cost="time",
        base_config=EXACT,
    )
    assert timed.recommended is not None and timed.recommended.query_depth == 2
    assert "by measured time" in timed.recommendation_text()


def test_sweep_fine_layers_and_errors(layered) -> None:
    docs, queries = layered
    ids, qids = [f"d{i}" for i in range(N)], [f"q{i}" for i in range(40)]
    grid = SweepGrid(layers=(2,), dims=(H,), transforms=("prefix",), shortlists=(N,), fine_layers=(2, 3))
    result = run_sweep(
        docs,
        queries,
        doc_ids=ids,
        qids=qids,
        fine_view=(3, H),
        grid=grid,
        timing_queries=0,
        encoder_cost=fake_cost(),
    )
    by = {p.fine_layer: p for p in result.points}
    # documents (and queries, full depth) at layer 2 only: a rotation of layer 3, same ranking
    assert (
        by[2].retention == pytest.approx(1.0) and by[2].query_depth == 2 and by[2].ingest_flops_per_doc == 2e7
    )
    assert by[3].query_depth == 3
    assert result.recommended is not None and result.recommended.fine_layer == 2
    with pytest.raises(ValueError, match=r"sweep query layer 4 is outside 1\.\.3"):
        SweepGrid((1,), (4,), query_layers=(4,)).validate(3, 16)
    with pytest.raises(ValueError, match=r"sweep query map 'linear' is not one of ridge, none"):
        SweepGrid((1,), (4,), query_maps=("linear",)).validate(3, 16)
    with pytest.raises(ValueError, match=r"sweep fine layer 0 is outside"):
        SweepGrid((1,), (4,), fine_layers=(0,)).validate(3, 16)
    partial = {2: docs[2], 3: docs[3]}
    with pytest.raises(ValueError, match=r"needs the document vectors of layer 1; got layers \[2, 3\]"):
        run_sweep(
            partial,
            queries,
            doc_ids=ids,
            qids=qids,
            fine_view=(3, H),
            timing_queries=0,
            grid=SweepGrid((2,), (H,), ("prefix",), (N,), query_layers=(1,)),
        )
    with pytest.raises(ValueError, match="cost must be one of flops, time"):
        run_sweep(
            docs, queries, doc_ids=ids, qids=qids, fine_view=(3, H), grid=grid, timing_queries=0, cost="x"
        )


def test_plot_has_end_to_end_axes(layered, tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    from esrag.evaluation.plot import _nice_ticks, plot_sweep

    docs, queries = layered
    grid = SweepGrid((2, 3), (4, H), ("prefix",), (20,), query_layers=(2,))
    result = run_sweep(
        docs,
        queries,
        doc_ids=[f"d{i}" for i in range(N)],
        qids=[f"q{i}" for i in range(40)],
        fine_view=(3, H),
        grid=grid,
        timing_queries=1,
        encoder_cost=fake_cost(),
    )
    assert plot_sweep(result, tmp_path / "s.png").read_bytes()[:4] == b"\x89PNG"
    assert _nice_ticks(150, 260) == [200]
    assert _nice_ticks(15, 45) == [20]
    for low, high in ((1e3, 1e12), (0.4, 30.0), (3e8, 6e8)):
        ticks = _nice_ticks(low, high)
        assert 1 <= len(ticks) <= 7 and ticks == sorted(ticks) and all(low <= t <= high for t in ticks)


# ------------------------------------------------------------------------ tune
def test_tune_applies_a_shallow_query_recommendation(tiny_encoder: Any) -> None:
    from dataclasses import replace

    from esrag.evaluation.tune import apply_recommendation, sweep_index
    from esrag.index import CascadeIndex

    words = "cat dog bird fish tree car house river city music paper cell gene protein".split()
    texts = [f"the {a} sees the {b} near the {c}" for a in words for b in words[:5] for c in words[6:9]][:150]
    index = CascadeIndex.build(tiny_encoder, texts, config=CascadeConfig(coarse_layer=3, coarse_dim=8))
    grid = SweepGrid((3,), (8,), ("prefix",), (20,), query_layers=(1,))
    result, doc_layers = sweep_index(
        index, tiny_encoder, grid=grid, target=0.0, sample_queries=10, timing_queries=2, timing_docs=2
    )
    assert {p.query_layer for p in result.points} == {0, 1}
    rec = result.recommended
    # the encoder pass dominates: the layer-1 query is the cheapest end to end
    assert rec is not None and rec.query_layer == 1 and rec.query_depth == 1
    assert result.settings["encoder_cost"]["query_ms_p50"].keys() == {"1", "3"}
    assert apply_recommendation(index, result, doc_layers)
    assert index.query_map is not None and index.query_map.layer == 1 and index.config.shortlist == 20
    assert index.query_depth() == 1
    # a recommendation with another fine layer needs a rebuild: not applied
    other = replace(result, recommended=replace(rec, fine_layer=2))
    assert not apply_recommendation(index, other, doc_layers)
    # back to full depth
    full = next(p for p in result.points if p.query_layer == 0)
    assert apply_recommendation(index, replace(result, recommended=full), doc_layers)
    assert index.query_map is None and index.query_depth() == 3
