"""Multi-positive batches (masking, duplicate-free sampling) and the selection rule, as units."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from esrag.train.batching import BatchPlan, false_negative_mask, no_duplicate_batches
from esrag.train.evaluate import paired_noise
from esrag.train.examples import Examples
from esrag.train.holdout import (
    RetrievalSlice,
    ScoredSlice,
    holdout_count,
    retrieval_slice,
    split_sources,
)
from esrag.train.losses import InfoNCELoss, PairEmbeddings
from esrag.train.selection import Evaluated, Selection, choose, verdict


# ---------------------------------------------------------------------- masking
def test_mask_covers_duplicates_judged_documents_and_hard_negatives() -> None:
    anchors = ["q1", "q1", "q2", "q3"]
    positives = ["d1", "d2", "d1", "d4"]
    related = [frozenset({"d1", "d2", "d9"})] * 2 + [frozenset({"d1"}), frozenset({"d4", "d2"})]
    negatives = ["d9", "d5", "d2", "d6"]
    mask = false_negative_mask(anchors, positives, related=related, negatives=negatives)
    assert mask.shape == (4, 8)
    assert mask[:, :4].tolist() == [
        [False, True, True, False],  # same query (row 1), same document (row 2)
        [True, False, True, False],  # row 2's document d1 is judged relevant to q1
        [True, False, False, False],
        [False, True, False, False],  # d2 (row 1's positive) is judged relevant to q3
    ]
    assert mask[:, 4:].tolist() == [
        [True, False, True, False],  # q1's negatives d9 and d2 are judged relevant to it
        [True, False, True, False],
        [False, False, False, False],
        [False, False, True, False],  # d2 is judged relevant to q3
    ]
    # without related texts or negatives: the rows alone, as before
    assert false_negative_mask(anchors, positives).shape == (4, 4)


def test_masked_infonce_loss_matches_the_hand_computed_value() -> None:
    """Rows 0 and 1 share the query, rows 0 and 2 the document: with the mask each row's
    denominator holds only its own positive and the candidates that are truly negatives."""
    unit = torch.eye(3)
    anchors = torch.stack([unit[0], unit[0], unit[1]])
    positives = torch.stack([unit[0], unit[1], unit[0]])
    mask = false_negative_mask(["q", "q", "r"], ["a", "b", "a"])
    assert mask.tolist() == [[False, True, True], [True, False, False], [True, False, False]]
    scale = 2.0
    loss = InfoNCELoss(scale)(PairEmbeddings(anchors, positives, false_negatives=mask))
    e = math.e
    # row 0: cos to candidates (a, b, a) = (1, 0, 1), only candidate 0 left → −log 1 = 0
    # row 1: cos (1, 0, 1), candidate 0 masked; candidates 1 (its own, 0) and 2 (1)
    # row 2: anchor unit[1]: cos (0, 1, 0); candidate 0 masked → own cos 0 vs candidate 1 cos 1
    row1 = -math.log(1 / (1 + e**scale))
    row2 = -math.log(1 / (1 + e**scale))
    assert float(loss) == pytest.approx((0 + row1 + row2) / 3, rel=1e-5)
    unmasked = InfoNCELoss(scale)(PairEmbeddings(anchors, positives))
    assert float(unmasked) > float(loss)  # the masked entries were counted as negatives


# ---------------------------------------------------------------------- sampling
def test_no_duplicate_batches_spread_a_query_over_batches() -> None:
    keys = [("q1", f"d{i}") for i in range(6)] + [(f"q{i}", f"e{i}") for i in range(2, 8)]
    batches = no_duplicate_batches(list(range(12)), keys, 4)
    assert sorted(i for b in batches for i in b) == list(range(12))
    for batch in batches:
        seen = [k for i in batch for k in keys[i]]
        assert len(seen) == len(set(seen))
    assert max(sum(keys[i][0] == "q1" for i in b) for b in batches) == 1


def test_batch_plan_carries_judged_documents_into_batches() -> None:
    ex = Examples(
        "s",
        ["q1", "q1", "q2", "q3", "q4", "q5"],
        ["d1", "d2", "d3", "d4", "d5", "d6"],
        judged={"q1": {"d1": 2, "d2": 1, "d7": 1}},
    )
    plan = BatchPlan([ex], batch_size=3, seed=0)
    found = {}
    for index in range(plan.per_epoch):
        batch = plan.micro_batch(index)
        assert batch.related is not None and len(set(batch.anchors)) == len(batch.anchors)
        found.update(zip(batch.anchors, batch.related, strict=True))
    assert found["q1"] == frozenset({"d1", "d2", "d7"}) and found["q2"] == frozenset({"d3"})


# ---------------------------------------------------------------------- held-out split
def test_holdout_count_rule() -> None:
    assert holdout_count(150, None) == 0  # 15 < 20: too few for a meaningful slice
    assert holdout_count(809, None) == 81
    assert holdout_count(10_000, None) == 300
    assert holdout_count(40, 0.25) == 10 and holdout_count(3, 0.01) == 1 and holdout_count(9, 0) == 0


def test_split_keeps_queries_apart_and_never_holds_out_mined_pairs() -> None:
    qrels = Examples("q", [f"q{i % 50}" for i in range(300)], [f"d{i}" for i in range(300)])
    mined = Examples("t", [f"t{i}" for i in range(300)], [f"d{i}" for i in range(300)], mined=True)
    split = split_sources([qrels, mined], None, seed=0)
    assert split.pairs[1] == (mined, None)
    assert split.pairs[0] == (qrels, None) and split.anchors == ()  # 5 of 50 distinct is below 20
    split = split_sources([qrels, mined], 0.2, seed=0)
    train, held = split.pairs[0]
    assert held is not None and len(set(held.anchors)) == 10 == len(split.anchors)
    assert not set(train.anchors) & set(held.anchors)
    again = split_sources([qrels, mined], 0.5, seed=7, saved=split.anchors)  # a resumed run
    assert again.anchors == split.anchors


def test_retrieval_slice_keeps_judged_documents_and_samples_the_rest() -> None:
    corpus = [f"doc {i}" for i in range(50)]
    held = Examples("s", ["q"], ["doc 3"], judged={"q": {"doc 3": 2, "doc 7": 1}}, corpus=corpus)
    part = retrieval_slice(held, None, max_docs=10, seed=0)
    assert len(part.docs) == 10 and part.docs[:2] == ["doc 3", "doc 7"]
    assert part.qrels == {"0": {"0": 2, "1": 1}}
    whole = retrieval_slice(held, None, max_docs=100, seed=0)
    assert sorted(whole.docs) == sorted(corpus)


# ---------------------------------------------------------------------- selection
def _ev(step: int, full: float, shallow: float | None = None, items: list[float] | None = None) -> Evaluated:
    scores = {"score": full, "full": full}
    if shallow is not None:
        scores["shallow"] = shallow
    return Evaluated(step, scores, {"s": items} if items is not None else {})


def test_rule_prefers_shallow_views_among_checkpoints_within_noise() -> None:
    def noise(_a: dict, _b: dict) -> float:
        return 0.02

    sel, chosen = choose(Selection(), _ev(0, 0.70, 0.10), noise)
    assert chosen and sel.base == sel.best == sel.top
    sel, chosen = choose(sel, _ev(10, 0.69, 0.30), noise)  # 0.01 below base: noise, better shallow
    assert chosen and sel.best is not None and sel.best.step == 10 and sel.stale == 0
    sel, chosen = choose(sel, _ev(20, 0.75, 0.25), noise)  # raises the best full view by 0.05
    assert chosen and sel.best is not None and sel.best.step == 20  # step 10 is now too far below
    sel, chosen = choose(sel, _ev(30, 0.74, 0.40), noise)  # within noise of 0.75, better shallow
    assert chosen and sel.best is not None and sel.best.step == 30
    sel, chosen = choose(sel, _ev(40, 0.70, 0.50), noise)  # 0.05 below the best full: not eligible
    assert not chosen and sel.stale == 1 and sel.best is not None and sel.best.step == 30
    sel, chosen = choose(sel, _ev(50, 0.74, 0.40), noise)  # ties keep the earlier
    assert not chosen and sel.stale == 2


def test_verdict_keeps_the_base_when_training_made_it_worse() -> None:
    sel, _ = choose(Selection(), _ev(0, 0.70, 0.10, [0.7, 0.7, 0.7]))
    for step, full in ((10, 0.60), (20, 0.55)):
        sel, chosen = choose(sel, _ev(step, full, 0.30, [full] * 3))
        assert not chosen
    result = verdict(sel)
    assert result.kept_base and sel.best is not None and sel.best.step == 0
    assert "WARNING: training did not beat the base model" in result.lines[-1]
    assert "best trained checkpoint (step 10)" in result.lines[-1]
    assert "base model, unchanged" in result.lines[-1]
    assert Selection.from_json(sel.to_json()) == sel


def test_paired_noise_is_the_standard_error_of_the_difference() -> None:
    part = RetrievalSlice("s", ["a", "b", "c", "d"], ["x"], {})
    mine, base = [1.0, 0.5, 0.0, 1.0], [0.5, 0.5, 0.5, 0.5]
    diff = np.array(mine) - np.array(base)
    assert paired_noise([part], {"s": mine}, {"s": base}) == pytest.approx(diff.std(ddof=1) / 2)
    assert paired_noise([part], {"s": mine}, {}) == 0.0
    gold = np.arange(30.0)
    scored = ScoredSlice("t", ["a"] * 30, ["b"] * 30, list(gold))
    rng = np.random.default_rng(0)
    cos, other = list(gold + rng.normal(0, 8, 30)), list(gold + rng.normal(0, 8, 30))
    assert paired_noise([scored], {"t": cos}, {"t": cos}) == 0.0
    assert 0.0 < paired_noise([scored], {"t": cos}, {"t": other}) < 0.5


def test_the_full_view_is_always_scored_last(tiny_encoder: object) -> None:
    from esrag.encoder import View
    from esrag.train import TrainConfig
    from esrag.train.objective import eval_views

    cfg = TrainConfig(train=("x",), output="o", eval_views=("3:32", "2:8", "1:16"))
    assert eval_views(cfg, tiny_encoder) == [View(2, 8), View(1, 16), View(3, 32)]  # type: ignore[arg-type]
    assert eval_views(TrainConfig(train=("x",), output="o", compress_dim=8), tiny_encoder) == [  # type: ignore[arg-type]
        View(2, 8),
        View(3, 32),
    ]
