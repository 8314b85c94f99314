"""Shallow-query training: the distillation and contrastive terms on hand-checked tensors, their
gradients (shallow layers yes, the detached teacher no), config/CLI validation, and a trained
model served by an index whose queries stop at the trained layer."""

from __future__ import annotations

import argparse
import json
import math
import random
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from esrag.encoder import EspressoEncoder
from esrag.index import CascadeConfig, CascadeIndex
from esrag.index.config import QueryMapKind
from esrag.train import QueryLoss, TrainConfig, train
from esrag.train.cli_args import add_train_arguments, config_from_args
from esrag.train.losses import (
    InfoNCELoss,
    PairEmbeddings,
    QueryContrastiveLoss,
    QueryDistillLoss,
    ShallowQueryLoss,
)
from esrag.train.objective import eval_views, query_layers

WORDS = "cat dog bird fish tree car house river city music paper cell gene protein drug virus".split()


# ----------------------------------------------------------------- values by hand
def test_distill_value_by_hand() -> None:
    student = torch.tensor([[1.0, 0.0], [3.0, 4.0]])
    teacher = torch.tensor([[0.0, 2.0], [6.0, 8.0]])  # row 0: orthogonal (1 - 0), row 1: parallel (1 - 1)
    assert QueryDistillLoss()(student, teacher).item() == pytest.approx(0.5)
    # 1 - cos is half the squared distance of the unit vectors (the MSE form)
    s, t = torch.nn.functional.normalize(student), torch.nn.functional.normalize(teacher)
    half_squared = ((s - t) ** 2).sum(1).mean().item() / 2
    assert QueryDistillLoss()(student, teacher).item() == pytest.approx(half_squared)
    opposite = QueryDistillLoss()(torch.tensor([[1.0, 1.0]]), torch.tensor([[-2.0, -2.0]]))
    assert opposite.item() == pytest.approx(2.0)


def test_distill_rejects_mismatched_shapes() -> None:
    with pytest.raises(ValueError, match=r"must both be \(B, H\), got \(2, 2\) and \(2, 3\)"):
        QueryDistillLoss()(torch.zeros(2, 2), torch.zeros(2, 3))


def test_contrastive_value_by_hand() -> None:
    # shallow anchors e1, e2; deep positives 2·e1, e1 + e2: cosines 1, 1/√2 (row 0), 0, 1/√2 (row 1)
    shallow = PairEmbeddings(torch.tensor([[1.0, 0.0], [0.0, 1.0]]), torch.zeros(2, 2) + 5)
    deep = PairEmbeddings(torch.ones(2, 2), torch.tensor([[2.0, 0.0], [1.0, 1.0]]))
    scale = 2.0
    got = QueryContrastiveLoss(scale)(shallow, deep).item()
    c = 1 / math.sqrt(2)
    row0 = -math.log(math.exp(scale * 1) / (math.exp(scale * 1) + math.exp(scale * c)))
    row1 = -math.log(math.exp(scale * c) / (math.exp(scale * 0) + math.exp(scale * c)))
    assert got == pytest.approx((row0 + row1) / 2, rel=1e-6)
    # it is InfoNCE of (shallow anchors, deep positives): composed, not re-implemented
    direct = InfoNCELoss(scale)(PairEmbeddings(shallow.anchors, deep.positives)).item()
    assert got == pytest.approx(direct)


def test_contrastive_uses_hard_negatives_and_the_false_negative_mask() -> None:
    anchors = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    positives = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    negatives = torch.tensor([[0.0, 1.0], [1.0, 0.0]])
    mask = torch.tensor([[False, True], [False, False]])  # positive 1 is a right answer for anchor 0
    shallow = PairEmbeddings(anchors, positives)
    deep = PairEmbeddings(anchors, positives, negatives, None, mask)
    scale = 1.0
    e = math.e
    row0 = -math.log(e / (e + 1 + e))  # candidates: pos0 (cos 1), pos1 masked, neg0 (0), neg1 (1)
    row1 = -math.log(e / (1 + e + e + 1))  # pos0 0, pos1 1, neg0 1, neg1 0
    assert QueryContrastiveLoss(scale)(shallow, deep).item() == pytest.approx((row0 + row1) / 2, rel=1e-5)


def test_shallow_query_loss_combines_and_averages_layers() -> None:
    torch.manual_seed(0)
    per_layer = {k: PairEmbeddings(torch.randn(4, 6), torch.randn(4, 6)) for k in (1, 2, 3)}
    distill = ShallowQueryLoss([1, 2], "distill", scale=5.0)
    contrastive = ShallowQueryLoss([1, 2], QueryLoss.CONTRASTIVE, scale=5.0)
    both = ShallowQueryLoss([2, 1], "both", scale=5.0, weight=3.0)
    d, d_parts = distill(per_layer)
    c, c_parts = contrastive(per_layer)
    b, b_parts = both(per_layer)
    by_hand = sum(QueryDistillLoss()(per_layer[k].anchors, per_layer[3].anchors) for k in (1, 2)) / 2
    assert d.item() == pytest.approx(by_hand.item())
    assert set(d_parts) == {"qdistill_L1", "qdistill_L2", "query"} and "qnce_L1" in c_parts
    assert b.item() == pytest.approx(3.0 * (d.item() + c.item()))
    assert b_parts["query"] == pytest.approx(b.item())
    scored = {k: PairEmbeddings(v.anchors, v.positives, scores=torch.ones(4)) for k, v in per_layer.items()}
    value, parts = both(scored)  # scored rows have no positives to rank: distillation only
    assert value.item() == pytest.approx(3.0 * d.item()) and "qnce_L1" not in parts
    with pytest.raises(ValueError, match=r"query layers \[3\] need embeddings shallower than the last layer"):
        ShallowQueryLoss([3], "distill", scale=1.0)(per_layer)
    with pytest.raises(ValueError, match="at least one query layer"):
        ShallowQueryLoss([], "distill", scale=1.0)


# ----------------------------------------------------------------- gradients
def _grad_sum(module: torch.nn.Module) -> float:
    return float(sum(p.grad.abs().sum() for p in module.parameters() if p.grad is not None))


@pytest.mark.parametrize("mode", ["distill", "contrastive"])
def test_gradient_reaches_the_shallow_layers_and_never_the_teacher(tiny_encoder: Any, mode: str) -> None:
    enc = tiny_encoder
    enc.model.train()
    enc.model.zero_grad(set_to_none=True)
    try:
        anchors = enc.pooled_layers(enc.tokenize(["cat dog", "red car", "big tree"]), [1, 3])
        docs = enc.pooled_layers(enc.tokenize(["cat dog runs", "a red car", "the tree"]), [1, 3])
        per_layer = {k: PairEmbeddings(anchors[k], docs[k]) for k in (1, 3)}
        loss, _ = ShallowQueryLoss([1], mode, scale=20.0)(per_layer)
        loss.backward()
        layers = enc.model.encoder.layer
        assert _grad_sum(layers[0]) > 0  # the query layer learns
        # layers 2-3 only feed the teacher (and the documents), which are detached
        assert all(p.grad is None for p in layers[1].parameters())
        assert all(p.grad is None for p in layers[2].parameters())
    finally:
        enc.model.zero_grad(set_to_none=True)
        enc.model.eval()


def test_teacher_tensors_receive_no_gradient() -> None:
    student = torch.randn(3, 4, requires_grad=True)
    teacher = torch.randn(3, 4, requires_grad=True)
    docs = torch.randn(3, 4, requires_grad=True)
    negatives = torch.randn(3, 4, requires_grad=True)
    loss, _ = ShallowQueryLoss([1], "both", scale=10.0)(
        {1: PairEmbeddings(student, docs), 2: PairEmbeddings(teacher, docs, negatives)}
    )
    loss.backward()
    assert student.grad is not None and student.grad.abs().sum() > 0
    assert teacher.grad is None and docs.grad is None and negatives.grad is None
    trained = torch.randn(3, 4, requires_grad=True)  # train_documents=True: the documents move too
    QueryContrastiveLoss(10.0, train_documents=True)(
        PairEmbeddings(student, trained), PairEmbeddings(teacher, trained)
    ).backward()
    assert trained.grad is not None and trained.grad.abs().sum() > 0


# ----------------------------------------------------------------- config and CLI
def _config(**kwargs: Any) -> TrainConfig:
    return TrainConfig(train=("x.jsonl",), output="out", **kwargs)


def test_config_validation() -> None:
    cfg = _config(query_layers=[2, 3], query_loss="both")
    assert cfg.query_layers == (2, 3) and cfg.query_loss is QueryLoss.BOTH
    assert TrainConfig.from_json(json.loads(json.dumps(cfg.to_json()))) == cfg
    assert _config().query_layers == () and _config().query_loss is QueryLoss.DISTILL
    with pytest.raises(ValueError, match=r"query_loss must be one of 'distill', 'contrastive', 'both', got"):
        _config(query_layers=(2,), query_loss="nce")
    with pytest.raises(ValueError, match=r"query_layers\[1\] must be >= 1, got 0"):
        _config(query_layers=(2, 0))
    with pytest.raises(TypeError, match=r"query_layers\[0\] must be an int, got '2'"):
        _config(query_layers=("2",))
    with pytest.raises(ValueError, match="query_weight has an invalid value 0"):
        _config(query_layers=(2,), query_weight=0)


def test_query_layers_checked_against_the_model(tiny_encoder: Any) -> None:
    assert query_layers(_config(query_layers=(2, 1, 2)), tiny_encoder) == [1, 2]
    with pytest.raises(ValueError, match=r"query_layers\[1\] = 3 is not a shallow layer of this 3-layer"):
        query_layers(_config(query_layers=(1, 3)), tiny_encoder)
    views = eval_views(_config(query_layers=(1,)), tiny_encoder)
    assert [(v.layer, v.dim) for v in views] == [(3, 32)]  # the shallow queries are scored instead


def test_cli_parses_comma_lists_and_rejects_bad_ones(capsys: pytest.CaptureFixture[str]) -> None:
    parser = add_train_arguments(argparse.ArgumentParser())
    argv = "--train x --output o --query-layers 2,3 --query-layers 1 --query-loss both".split()
    args = parser.parse_args(argv)
    cfg = config_from_args(args)
    assert cfg.query_layers == (2, 3, 1) and cfg.query_loss is QueryLoss.BOTH
    assert config_from_args(parser.parse_args(["--train", "x", "--output", "o"])).query_layers == ()
    with pytest.raises(SystemExit):
        parser.parse_args(["--train", "x", "--output", "o", "--query-layers", "2,a"])
    assert "expected layer numbers like 2,3, got '2,a'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parser.parse_args(["--train", "x", "--output", "o", "--query-loss", "kl"])
    assert "invalid choice: 'kl'" in capsys.readouterr().err


def test_pipeline_train_step_passes_query_layers(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from esrag.cli.main import build_parser, main

    recipe = tmp_path / "qt.toml"
    recipe.write_text(
        '[train]\ntrain = "pairs.jsonl"\noutput = "runs/q"\nquery_layers = [2, 3]\nquery_loss = "both"\n'
    )
    assert main(["run", str(recipe), "--dry-run"]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("== esrag train"))
    assert "--query-layers 2 --query-layers 3 --query-loss both" in line
    argv = line.removeprefix("== esrag ").split()
    cfg = config_from_args(build_parser(argv).parse_args(argv))
    assert cfg.query_layers == (2, 3) and cfg.query_loss is QueryLoss.BOTH


# ----------------------------------------------------------------- a trained model, served
@pytest.fixture(scope="module")
def pairs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    rng = random.Random(0)
    rows = []
    for _ in range(48):
        words = rng.sample(WORDS, 5)
        rows.append({"anchor": " ".join(words[:2]), "positive": " ".join(words)})
    path = tmp_path_factory.mktemp("query-train") / "pairs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_trained_model_saves_and_serves_shallow_queries(
    tiny_model_dir: Path, pairs: Path, tmp_path: Path
) -> None:
    output = tmp_path / "model"
    cfg = TrainConfig(
        train=(str(pairs),),
        output=str(output),
        base=str(tiny_model_dir),
        eval_fraction=0.0,
        batch_size=8,
        compress_dim=8,
        max_steps=4,
        lr=1e-3,
        device="cpu",
        show_progress=False,
        query_layers=(2,),
        query_loss="both",
    )
    steps: list[dict[str, float]] = []
    result = train(cfg, on_step=lambda _s, parts: steps.append(parts))
    assert result.steps == 4 and {"qdistill_L2", "qnce_L2", "query"} <= set(steps[0])
    assert steps[0]["loss"] > steps[0]["query"] > 0
    saved = json.loads((output / "esrag_train.json").read_text())
    assert saved["config"]["query_layers"] == [2] and saved["config"]["query_loss"] == "both"
    enc = EspressoEncoder(output, device="cpu")
    base = EspressoEncoder(tiny_model_dir, device="cpu")
    texts = [json.loads(line)["positive"] for line in pairs.read_text().splitlines()]
    wide_trained = enc.encode(texts[:4], views=[(2, 32)])[0]
    assert not np.allclose(wide_trained, base.encode(texts[:4], views=[(2, 32)])[0])  # it trained
    config = CascadeConfig(coarse_layer=3, coarse_dim=8, transform="pca", query_layer=2, query_map="none")
    ids = [str(i) for i in range(len(texts))]
    index = CascadeIndex.build(enc, texts, ids, config=config)
    assert index.query_map is not None and index.query_map.kind is QueryMapKind.NONE
    assert index.query_map.layer == 2 and index.query_depth("fine") == 2
    folder = tmp_path / "index"
    index.save(folder)
    loaded = CascadeIndex.load(folder, EspressoEncoder(output, device="cpu"))
    queries = ["cat dog", "river city"]
    got = loaded.search(queries, k=3, mode="fine")
    # the layer-2 query vector as it is, against the documents' layer-3 vectors
    q = enc.encode(queries, views=[(2, 32)])[0]
    d = enc.encode(texts, views=[(3, 32)])[0]
    expected = [[ids[j] for j in np.argsort(-(q @ d.T)[i], kind="stable")[:3]] for i in range(2)]
    assert got.ids == expected
