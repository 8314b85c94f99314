"""Early exit: decisive queries are answered from the coarse shortlist and their encoder pass
stops at the coarse layer (forward hooks); the margin's checks, CLI flag and persistence."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from esrag.cli.main import main
from esrag.index import CascadeConfig, CascadeIndex, IndexFormatError
from esrag.index.early_exit import coarse_margins, exits
from esrag.langchain.vectorstore import CascadeVectorStore
from tests.conftest import layers_run, ran

WORDS = "cat dog bird fish tree car house river city music paper cell gene protein drug virus".split()
TEXTS = [f"the {a} sees the {b} and the {c}" for a in WORDS for b in WORDS[:6] for c in WORDS[5:9] if a != b][
    :150
]
QUERIES = ["the cat sees the dog", "a protein and a gene", "the river city", "music paper", "drug virus cell"]
CFG = CascadeConfig(coarse_layer=1, coarse_dim=8, transform="pca")


@pytest.fixture(scope="module")
def index(tiny_encoder: Any) -> CascadeIndex:
    return CascadeIndex.build(tiny_encoder, TEXTS, config=CFG)


def test_margin_by_hand() -> None:
    scores = np.array(
        [[0.9, 0.5, 0.4, 0.1], [0.8, 0.8, 0.3, 0.0], [0.5, 0.5, 0.5, 0.5], [0.7, 0.6, -np.inf, -np.inf]],
        dtype=np.float32,
    )
    np.testing.assert_allclose(coarse_margins(scores), [0.4 / 0.8, 0.0, 0.0, 1.0], atol=1e-6)
    np.testing.assert_allclose(coarse_margins(np.array([[0.3, -np.inf], [0.3, 0.1]])), [1.0, 1.0])
    assert exits(scores, 0.49).tolist() == [True, False, False, True]
    assert exits(scores, 0.0).all() and not exits(scores, None).any() and not exits(scores, 1.01).any()


def test_inf_never_exits_and_zero_always_exits(index: CascadeIndex, tiny_encoder: Any) -> None:
    plain = index.search(QUERIES, k=5, shortlist=30)
    coarse = index.search(QUERIES, k=5, mode="coarse")
    with layers_run(tiny_encoder) as calls:
        never = index.search(QUERIES, k=5, shortlist=30, exit_margin=math.inf)
        assert ran(calls) == [1, 2, 3]
        always = index.search(QUERIES, k=5, shortlist=30, exit_margin=0)
        assert ran(calls) == [1]  # no layer above the coarse one ran
    assert never.exited == []  # inf: no exit test at all
    assert (never.ids, never.scores) == (plain.ids, plain.scores)
    assert always.exited == [True] * len(QUERIES)
    assert always.ids == coarse.ids  # answered from the coarse shortlist, coarse scores
    np.testing.assert_allclose(always.scores, coarse.scores, atol=1e-6)


def test_mixed_exits_answer_each_query_its_own_way(index: CascadeIndex, tiny_encoder: Any) -> None:
    source, fine = index.encode_queries(QUERIES)
    shortlist = index.search_embeddings(source, None, k=30, mode="coarse")
    margins = coarse_margins(np.array(shortlist.scores))
    # halfway between the two middle margins: no query sits on the threshold, where a query
    # encoded alone (no batch padding) could fall on either side by float noise
    middle = np.sort(margins)[len(QUERIES) // 2 - 1 : len(QUERIES) // 2 + 1]
    assert middle[1] - middle[0] > 1e-4, margins
    margin = float(middle.mean())
    decisive = (margins >= margin).tolist()
    assert 0 < sum(decisive) < len(QUERIES)
    plain = index.search(QUERIES, k=5, shortlist=30)
    coarse = index.search(QUERIES, k=5, mode="coarse")
    got = index.search(QUERIES, k=5, shortlist=30, exit_margin=margin)
    assert got.exited == decisive
    for i, gone in enumerate(decisive):
        assert got.ids[i] == (coarse.ids[i] if gone else plain.ids[i])
    # the same decisions from precomputed vectors (search_embeddings) and one query at a time
    vec = index.search_embeddings(source, fine, k=5, shortlist=30, exit_margin=margin)
    assert vec.exited == decisive and vec.ids == got.ids
    with layers_run(tiny_encoder) as calls:
        for query, gone in zip(QUERIES, decisive, strict=True):
            one = index.search(query, k=5, shortlist=30, exit_margin=margin)
            assert one.exited == [gone]
            assert ran(calls) == ([1] if gone else [1, 2, 3])


def test_config_margin_is_the_default_and_persists(tiny_encoder: Any, tmp_path: Path) -> None:
    index = CascadeIndex.build(tiny_encoder, TEXTS[:60], config=CFG.replace(exit_margin=0.0))
    assert index.search(QUERIES[:2], k=3).exited == [True, True]
    assert index.search(QUERIES[:2], k=3, exit_margin=math.inf).exited == []
    index.save(tmp_path / "ix")
    saved = json.loads((tmp_path / "ix" / "manifest.json").read_text())
    assert saved["config"]["exit_margin"] == 0.0
    loaded = CascadeIndex.load(tmp_path / "ix", tiny_encoder)
    assert loaded.config.exit_margin == 0.0 and loaded.search(QUERIES[0], k=3).exited == [True]
    loaded.reconfigure(exit_margin=math.inf)  # inf: never, stored as None
    assert loaded.config.exit_margin is None and loaded.search(QUERIES[0], k=3).exited == []
    # an index written before the field loads with no early exit
    del saved["config"]["exit_margin"], saved["config"]["progressive"]
    (tmp_path / "ix" / "manifest.json").write_text(json.dumps(saved))
    old = CascadeIndex.load(tmp_path / "ix", tiny_encoder)
    assert old.config.exit_margin is None and old.config.progressive is False
    saved["config"]["exit_margin"] = -1
    (tmp_path / "ix" / "manifest.json").write_text(json.dumps(saved))
    with pytest.raises(
        IndexFormatError, match=r"manifest.json: bad config .*exit_margin must be a number >= 0"
    ):
        CascadeIndex.load(tmp_path / "ix", tiny_encoder)


def test_format1_folders_load_without_an_exit_margin() -> None:
    folder = Path(__file__).parent / "data" / "format1" / "vectors"
    index = CascadeIndex.load(folder)
    assert index.config.exit_margin is None and index.config.progressive is False


@pytest.mark.parametrize("bad", [-0.1, float("nan"), "0.5", True, [0.5]])
def test_bad_margins_are_refused(index: CascadeIndex, bad: Any) -> None:
    with pytest.raises(
        ValueError, match=r"CascadeConfig.exit_margin must be a number >= 0 \(inf: never exit\)"
    ):
        CascadeConfig(exit_margin=bad)
    with pytest.raises(ValueError, match=r"^exit_margin must be a number >= 0"):
        index.search(QUERIES[0], exit_margin=bad)


def test_vector_store_and_retriever_take_the_margin(index: CascadeIndex, tiny_encoder: Any) -> None:
    store = CascadeVectorStore(tiny_encoder, index=index)
    coarse = index.search(QUERIES[0], k=3, mode="coarse")
    with layers_run(tiny_encoder) as calls:
        docs = store.similarity_search(QUERIES[0], k=3, exit_margin=0)
        assert ran(calls) == [1]
        retrieved = store.as_retriever(search_kwargs={"k": 3, "exit_margin": 0}).invoke(QUERIES[0])
        assert ran(calls) == [1]
        store.as_retriever(search_kwargs={"k": 3}).invoke(QUERIES[0])
        assert ran(calls) == [1, 2, 3]
    assert [d.id for d in docs] == [d.id for d in retrieved] == coarse.ids[0]
    with pytest.raises(ValueError, match="exit_margin must be a number >= 0"):
        store.similarity_search(QUERIES[0], exit_margin=-1)


def test_cli_exit_margin(
    tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ESRAG_CACHE", str(tmp_path / "cache"))
    (tmp_path / "c.jsonl").write_text(
        "".join(json.dumps({"id": f"d{i}", "text": t}) + "\n" for i, t in enumerate(TEXTS[:80]))
    )
    model = str(tiny_model_dir)
    assert main(["build", "c.jsonl", "--index", "ix", "--model", model, "--coarse", "1:8", "-q"]) == 0
    capsys.readouterr()
    search = ["search", "--index", "ix", QUERIES[0], "-k", "3", "--json"]
    assert main([*search, "--exit-margin", "0"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["exited"] is True and len(out["hits"]) == 3
    assert main([*search, "--exit-margin", "inf"]) == 0
    assert "exited" not in json.loads(capsys.readouterr().out)
    assert main(["search", "--index", "ix", QUERIES[0], "--exit-margin", "0"]) == 0
    assert "(early exit: coarse scores)" in capsys.readouterr().out
    # sweep/tune calibrate it (label-free here: document-derived queries)
    sweep = ["--index", "ix", "--model", model, "--layers", "1", "--dims", "8", "--transforms", "prefix"]
    sweep += ["--shortlists", "20", "--early-exit", "--sample-queries", "30", "--timing-queries", "2", "-q"]
    assert main(["sweep", *sweep, "--json", "--no-plot", "--output", "sw"]) == 0
    points = json.loads(capsys.readouterr().out)["points"]
    assert any(p["exit_margin"] is not None and 0 < p["exit_rate"] <= 1 for p in points)
    assert "exit ≥" in (tmp_path / "sw" / "sweep.md").read_text()
    main(["tune", *sweep, "--target", "0.5", "--json"])
    tuned = json.loads(capsys.readouterr().out)
    applied = CascadeIndex.load("ix").config.exit_margin
    assert applied == (tuned["recommended"] or {}).get("exit_margin")
    for bad, why in (
        ("-1", "--exit-margin must be a number >= 0"),
        ("nan", "must be a number >= 0"),
        ("x", "'x'"),
    ):
        with pytest.raises(SystemExit):
            main([*search, "--exit-margin", bad])
        assert why in capsys.readouterr().err


def test_sharded_index_refuses_a_margin(tiny_encoder: Any) -> None:
    from esrag.index.sharded import ShardedIndex

    sharded = ShardedIndex.build(tiny_encoder, TEXTS[:60], shards=2, config=CFG)
    with pytest.raises(ValueError, match=r"exit_margin .* is not supported by a sharded index"):
        sharded.search(QUERIES[0], k=3, exit_margin=0)


# ------------------------------------------------------------------ calibration / sweep
def test_exit_points_by_hand() -> None:
    from esrag.evaluation.exit_calibration import exit_points

    margins = np.array([0.9, 0.7, 0.5, 0.1])
    cascade = np.array([1.0, 1.0, 1.0, 1.0])
    coarse = np.array([1.0, 1.0, 0.0, 0.0])  # the two most decisive queries lose nothing
    found = exit_points(margins, cascade, coarse, reference=1.0, target=0.99, rates=(0.25, 0.75))
    best = found[0]
    assert best.calibrated and (best.margin, best.exit_rate, best.quality) == (0.7, 0.5, 1.0)
    rest = {p.exit_rate: p for p in found[1:]}
    assert rest[0.25].margin == 0.9 and rest[0.25].quality == 1.0
    assert rest[0.75].margin == 0.5 and rest[0.75].quality == pytest.approx(2 / 3 + 1 / 12)
    # unjudged queries (NaN) count for the exit rate only
    nan = exit_points(
        margins, np.array([1.0, np.nan, 1.0, 1.0]), coarse, reference=1.0, target=0.99, rates=()
    )
    assert (nan[0].margin, nan[0].exit_rate) == (0.7, 0.5)
    assert exit_points(margins, cascade, coarse * 0, reference=1.0, target=0.99, rates=()) == []


def test_sweep_calibrates_the_exit_margin() -> None:
    from esrag.evaluation.encoder_cost import EncoderCost
    from esrag.evaluation.sweep import SweepGrid, run_sweep

    from .test_depth_cost import TINY

    rng = np.random.default_rng(0)
    n, h = 300, 16

    def unit(x: np.ndarray) -> np.ndarray:
        return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)

    deep = unit(rng.normal(size=(n, h)))
    shallow = unit(deep + 0.08 * rng.normal(size=(n, h)))
    q_deep = unit(deep[:60] + 0.15 * rng.normal(size=(60, h)))
    q_shallow = unit(q_deep + 0.08 * rng.normal(size=(60, h)))
    cost = EncoderCost(
        TINY,
        {1: 1e6, 2: 2e6, 3: 3e6},
        {1: 1e7, 2: 2e7, 3: 3e7},
        {1: 1.0, 2: 2.0, 3: 3.0},
        {1: 1.5, 2: 3.0, 3: 4.5},
        {1: 10.0, 2: 20.0, 3: 30.0},
    )
    grid = SweepGrid(layers=(1, 3), dims=(h,), transforms=("prefix",), shortlists=(20,), early_exit=True)
    qrels = {f"q{i}": {f"d{i}": 1} for i in range(60)}
    result = run_sweep(
        {1: shallow, 3: deep},
        {1: q_shallow, 3: q_deep},
        doc_ids=[f"d{i}" for i in range(n)],
        qids=[f"q{i}" for i in range(60)],
        fine_view=(3, h),
        grid=grid,
        qrels=qrels,
        target=0.95,
        timing_queries=2,
        encoder_cost=cost,
    )
    plain = [p for p in result.points if p.exit_margin is None]
    exiting = [p for p in result.points if p.exit_margin is not None]
    assert len(plain) == 2 and exiting and all(p.layer == 1 for p in exiting)  # layer 3 = the pass: no exit
    base = next(p for p in plain if p.layer == 1)
    for p in exiting:
        r = p.exit_rate
        assert 0 < r <= 1
        assert p.encoder_flops == pytest.approx(r * 1e6 + (1 - r) * 3e6)  # exited: pass to layer 1
        assert p.exit_saving == pytest.approx(1 - p.end_to_end_flops / base.end_to_end_flops)
        assert p.exit_saving > 0
    calibrated = [p for p in exiting if p.exit_calibrated]
    assert len(calibrated) == 1 and calibrated[0].retention >= 0.95 and calibrated[0].exit_rate > 0
    higher = [p for p in exiting if p.exit_rate > calibrated[0].exit_rate]
    assert all(p.retention < 0.95 for p in higher)  # the most exits that keep the target
    assert "exit ≥" in result.to_markdown()
    json.dumps(result.to_json())
