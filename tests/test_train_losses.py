"""ESE losses on hand-checked tensors: values, gradients, detached teachers, PCA targets."""

from __future__ import annotations

import math

import pytest
import torch

from esrag.train.losses import (
    CompressLoss,
    CoSENTLoss,
    ESELoss,
    ExpressLoss,
    InfoNCELoss,
    PairEmbeddings,
    RunningPCA,
    kl_alignment,
    layer_weight,
)

E1, E2 = [1.0, 0.0], [0.0, 1.0]


def t(rows: list[list[float]], grad: bool = False) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float32, requires_grad=grad)


def test_infonce_in_batch_value() -> None:
    batch = PairEmbeddings(t([E1, E2]), t([E1, E2]))
    # logits [[1, 0], [0, 1]]: each row −log(e / (e + 1))
    assert InfoNCELoss(scale=1.0)(batch).item() == pytest.approx(math.log(1 + math.exp(-1)))


def test_infonce_hard_negatives_value() -> None:
    batch = PairEmbeddings(t([E1, E2]), t([E1, E2]), negatives=t([E2, E1]))
    # row 0 candidates cos [1, 0, 0, 1] → −log(e / (2e + 2)) (same for row 1)
    expected = math.log((2 * math.e + 2) / math.e)
    assert InfoNCELoss(scale=1.0)(batch).item() == pytest.approx(expected, rel=1e-6)


def test_infonce_masks_false_negatives() -> None:
    anchors, positives = t([E1, E1]), t([E1, E1])
    plain = InfoNCELoss(scale=5.0)(PairEmbeddings(anchors, positives))
    mask = torch.tensor([[False, True], [True, False]])
    masked = InfoNCELoss(scale=5.0)(PairEmbeddings(anchors, positives, false_negatives=mask))
    assert plain.item() == pytest.approx(math.log(2))
    assert masked.item() == pytest.approx(0.0, abs=1e-6)


def test_cosent_values() -> None:
    anchors, positives = t([E1, E1]), t([E1, E2])  # cos = [1, 0]
    right = PairEmbeddings(anchors, positives, scores=torch.tensor([5.0, 1.0]))
    wrong = PairEmbeddings(anchors, positives, scores=torch.tensor([1.0, 5.0]))
    loss = CoSENTLoss(scale=1.0)
    assert loss(right).item() == pytest.approx(math.log(1 + math.exp(-1)))
    assert loss(wrong).item() == pytest.approx(math.log(1 + math.exp(1)))
    equal = PairEmbeddings(anchors, positives, scores=torch.tensor([2.0, 2.0]))
    assert loss(equal).item() == pytest.approx(0.0, abs=1e-7)  # log(1 + nothing)
    with pytest.raises(ValueError, match="needs scores"):
        loss(PairEmbeddings(anchors, positives))


def test_layer_weights() -> None:
    assert layer_weight(1) == 1.0
    assert layer_weight(2) == pytest.approx(1 / (1 + math.log(2)))
    with pytest.raises(ValueError, match="layer must be >= 1"):
        layer_weight(0)


@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_kl_alignment_value(temperature: float) -> None:
    student, teacher = t([[0.0, 0.0]]), t([[math.log(3), 0.0]])
    p = torch.softmax(teacher / temperature, dim=-1)[0]
    expected = float((p * (p / 0.5).log()).sum()) * temperature  # KL(p ‖ uniform) · T
    assert kl_alignment(student, teacher, temperature).item() == pytest.approx(expected)
    assert kl_alignment(teacher, teacher, temperature).item() == pytest.approx(0.0, abs=1e-7)


def test_express_value_and_teacher_gets_no_gradient() -> None:
    torch.manual_seed(0)
    shallow = {
        1: PairEmbeddings(torch.randn(4, 6, requires_grad=True), torch.randn(4, 6, requires_grad=True)),
        2: PairEmbeddings(torch.randn(4, 6, requires_grad=True), torch.randn(4, 6, requires_grad=True)),
    }
    teacher = PairEmbeddings(torch.randn(4, 6, requires_grad=True), torch.randn(4, 6, requires_grad=True))
    base = InfoNCELoss(scale=10.0)
    loss, parts = ExpressLoss(base, kl_weight=0.5, temperature=2.0, reduction="sum")(shallow, teacher)
    expected = sum(
        layer_weight(layer)
        * (base(batch) + 0.5 * kl_alignment(base.logits(batch), base.logits(teacher), 2.0))
        for layer, batch in shallow.items()
    )
    assert loss.item() == pytest.approx(float(expected.detach()), rel=1e-6)
    assert set(parts) == {"base_L1", "kl_L1", "base_L2", "kl_L2"}
    loss.backward()
    assert teacher.anchors.grad is None and teacher.positives.grad is None
    for batch in shallow.values():
        assert batch.anchors.grad is not None and batch.anchors.grad.abs().sum() > 0
    mean_loss, _ = ExpressLoss(base, kl_weight=0.5, temperature=2.0)(shallow, teacher)  # default: mean
    assert mean_loss.item() == pytest.approx(loss.item() / 2, rel=1e-6)


def test_running_pca_matches_pooled_covariance() -> None:
    torch.manual_seed(1)
    a, b = torch.randn(50, 5), torch.randn(50, 5) * 2 + 1
    pca = RunningPCA(momentum=0.99)
    pca.update(a)
    pca.update(b)  # second update averages equally (bias-corrected EMA)
    both = torch.cat([a, b]).double()
    centred = both - both.mean(0)
    assert pca.mean is not None and pca.cov is not None
    assert torch.allclose(pca.mean, both.mean(0), atol=1e-10)
    assert torch.allclose(pca.cov, centred.T @ centred / 100, atol=1e-10)
    _mean, components = pca.components(3)
    assert components.shape == (5, 3)
    assert torch.allclose(components.T @ components, torch.eye(3), atol=1e-5)
    assert (components[torch.arange(3), torch.arange(3)] >= 0).all()  # sign convention


def test_compress_value_hand_checked() -> None:
    x = t([[0, 3], [0, -3], [1, 0], [-1, 0]], grad=True)  # variance 4.5 on dim 2, 0.5 on dim 1
    loss = CompressLoss(1, temperature=1.0, mode="batch")
    # top component e2: target [3, −3, 0, 0] vs prefix [0, 0, 1, −1]; KL over one feature is 0
    assert loss(x, layer=1).item() == pytest.approx(5.0)
    two = CompressLoss(2, temperature=1.0, mode="batch")
    target = t([[3, 0], [-3, 0], [0, 1], [0, -1]])  # components (e2, e1): columns swapped
    p = torch.softmax(target, -1)
    kl = (p * (p.log() - torch.log_softmax(x.detach(), -1))).sum() / 4
    assert two(x, layer=1).item() == pytest.approx(5.0 + kl.item(), rel=1e-6)


def test_compress_target_is_detached_and_only_prefix_gets_gradient() -> None:
    torch.manual_seed(2)
    x = torch.randn(16, 8, requires_grad=True)
    CompressLoss(3, temperature=0.5)(x, layer=4).backward()
    assert x.grad is not None
    assert x.grad[:, :3].abs().sum() > 0
    assert torch.equal(x.grad[:, 3:], torch.zeros(16, 5))


def test_compress_state_round_trip() -> None:
    torch.manual_seed(3)
    loss = CompressLoss(2, momentum=0.9)
    for _ in range(3):
        loss(torch.randn(10, 4), layer=2)
    clone = CompressLoss(2, momentum=0.9)
    clone.load_pca_state(loss.pca_state())
    x = torch.randn(10, 4)
    assert torch.equal(loss.target(x, 2), clone.target(x, 2))


def test_ese_composition() -> None:
    torch.manual_seed(4)

    def batch() -> PairEmbeddings:
        return PairEmbeddings(torch.randn(4, 6), torch.randn(4, 6))

    per_layer = {1: batch(), 2: batch(), 3: batch()}
    base = InfoNCELoss(scale=10.0)
    express = ExpressLoss(base)
    total = ESELoss(
        base, express=express, compress=CompressLoss(2, mode="batch"), express_weight=0.5, compress_weight=2.0
    )(per_layer)
    exp_value, _ = express({1: per_layer[1], 2: per_layer[2]}, per_layer[3])
    check = CompressLoss(2, mode="batch")
    comp = sum(check(per_layer[k].texts(), k) for k in (1, 2, 3)) / 3
    expected = base(per_layer[3]) + 0.5 * exp_value + 2.0 * comp
    assert total.loss.item() == pytest.approx(float(expected), rel=1e-5)
    assert {"base_L3", "express", "compress", "loss"} <= set(total.parts)
    only_base = ESELoss(base)(per_layer)
    assert only_base.loss.item() == pytest.approx(base(per_layer[3]).item())


def test_pair_embeddings_shape_errors() -> None:
    with pytest.raises(ValueError, match=r"anchors and positives must both be \(B, H\)"):
        PairEmbeddings(torch.zeros(2, 3), torch.zeros(3, 3))
    with pytest.raises(ValueError, match=r"scores must be \(2,\)"):
        PairEmbeddings(torch.zeros(2, 3), torch.zeros(2, 3), scores=torch.zeros(3))


def test_logits_and_pca_target_are_float32_under_autocast() -> None:
    from esrag.train.losses import cosine_logits

    torch.manual_seed(0)
    a, p = torch.randn(4, 8), torch.randn(4, 8)
    batch = PairEmbeddings(a, p, negatives=torch.randn(4, 8))
    compress = CompressLoss(4, mode="batch")
    expected_logits = cosine_logits(batch, 20.0)
    expected_target = CompressLoss(4, mode="batch").target(batch.texts(), 1)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        plain = a @ p.T  # what autocast does to a matmul: the losses must not get this
        logits = cosine_logits(batch, 20.0)
        target = compress.target(batch.texts(), 1)
        loss = compress(batch.texts(), 1)
    assert plain.dtype == torch.bfloat16
    assert logits.dtype == target.dtype == loss.dtype == torch.float32
    assert torch.equal(logits, expected_logits) and torch.equal(target, expected_target)
