"""Retrieval metrics against hand-computed cases (and pytrec_eval when installed)."""

from __future__ import annotations

import math
import random

import pytest

from esrag.evaluation.metrics import (
    evaluate_run,
    mrr_at_k,
    ndcg_at_k,
    parse_metric,
    recall_at_k,
)

L2 = math.log2


def test_ndcg_graded_hand_computed() -> None:
    qrels = {"q": {"a": 2, "b": 1, "c": 0}}
    run = {"q": ["x", "b", "a"]}
    dcg = 1 / L2(3) + 2 / L2(4)
    idcg = 2 / L2(2) + 1 / L2(3)
    assert ndcg_at_k(run, qrels, 10) == pytest.approx(dcg / idcg)
    # cut at 2: only "b" counts; the ideal is also cut at 2
    assert ndcg_at_k(run, qrels, 2) == pytest.approx((1 / L2(3)) / idcg)
    assert ndcg_at_k(run, qrels, 1) == 0.0


def test_ndcg_perfect_and_mean_over_queries() -> None:
    qrels = {"q1": {"a": 1}, "q2": {"b": 1, "c": 1}}
    run = {"q1": ["a", "z"], "q2": ["z", "b"]}
    q2 = (1 / L2(3)) / (1 + 1 / L2(3))
    per = ndcg_at_k(run, qrels, 10, per_query=True)
    assert per == pytest.approx({"q1": 1.0, "q2": q2})
    assert ndcg_at_k(run, qrels, 10) == pytest.approx((1 + q2) / 2)


def test_recall_and_mrr_hand_computed() -> None:
    qrels = {"q1": {"a": 1, "b": 1, "c": 1, "d": 0}, "q2": {"e": 3}}
    run = {"q1": ["d", "a", "x", "c"], "q2": ["x", "y", "z", "e"]}
    assert recall_at_k(run, qrels, 2, per_query=True) == {"q1": 1 / 3, "q2": 0.0}
    assert recall_at_k(run, qrels, 4) == pytest.approx((2 / 3 + 1) / 2)
    assert mrr_at_k(run, qrels, 10, per_query=True) == {"q1": 0.5, "q2": 0.25}
    assert mrr_at_k(run, qrels, 3) == pytest.approx(0.25)  # q2 misses the cut


def test_missing_query_scores_zero_and_unjudged_queries_ignored() -> None:
    qrels = {"q1": {"a": 1}, "q2": {"b": 1}, "q3": {"c": 0}}
    run = {"q1": ["a"], "q9": ["a"]}
    assert ndcg_at_k(run, qrels, 10, per_query=True) == {"q1": 1.0, "q2": 0.0}
    assert ndcg_at_k({}, {}, 10) == 0.0


def test_score_dict_runs_sort_like_trec_eval() -> None:
    qrels = {"q": {"b": 1}}
    # tie on score: trec_eval ranks doc ids descending, so "b" before "a"
    assert mrr_at_k({"q": {"a": 0.5, "b": 0.5, "c": 0.9}}, qrels, 10) == 0.5


def test_bad_input() -> None:
    with pytest.raises(ValueError, match="k must be a positive int, got 0"):
        ndcg_at_k({}, {"q": {"a": 1}}, 0)
    with pytest.raises(ValueError, match=r"run\['q'\] lists doc id 'a' twice"):
        recall_at_k({"q": ["a", "b", "a"]}, {"q": {"a": 1}}, 10)
    with pytest.raises(TypeError, match="must be a list of doc ids, got a string"):
        mrr_at_k({"q": "abc"}, {"q": {"a": 1}}, 10)
    with pytest.raises(ValueError, match="unknown metric 'map@10'"):
        parse_metric("map@10")


def test_evaluate_run_names() -> None:
    out = evaluate_run({"q": ["a"]}, {"q": {"a": 1}})
    assert out == {"ndcg@10": 1.0, "recall@10": 1.0, "recall@100": 1.0, "mrr@10": 1.0}


def test_matches_pytrec_eval_on_random_runs() -> None:
    pytrec_eval = pytest.importorskip("pytrec_eval")
    rng = random.Random(0)
    docs = [f"d{i}" for i in range(60)]
    qrels = {
        f"q{i}": {d: rng.choice([0, 1, 1, 2, 3]) for d in rng.sample(docs, rng.randint(1, 6))}
        for i in range(40)
    }
    run_scores = {qid: {d: rng.random() for d in rng.sample(docs, 30)} for qid in qrels}
    # make sure some relevant docs are ranked
    for qid, judged in qrels.items():
        for d in judged:
            run_scores[qid][d] = rng.random()
    ev = pytrec_eval.RelevanceEvaluator(
        {q: dict(j) for q, j in qrels.items()}, {"ndcg_cut.10", "recall.10", "recip_rank"}
    )
    ref = ev.evaluate(run_scores)
    judged_q = [q for q, j in qrels.items() if any(g > 0 for g in j.values())]
    ours_ndcg = ndcg_at_k(run_scores, qrels, 10, per_query=True)
    ours_rec = recall_at_k(run_scores, qrels, 10, per_query=True)
    ours_mrr = mrr_at_k(run_scores, qrels, 10**6, per_query=True)
    for q in judged_q:
        assert ours_ndcg[q] == pytest.approx(ref[q]["ndcg_cut_10"], abs=1e-4)
        assert ours_rec[q] == pytest.approx(ref[q]["recall_10"], abs=1e-4)
        assert ours_mrr[q] == pytest.approx(ref[q]["recip_rank"], abs=1e-4)
