"""The training loop on the tiny random BERT: learning, shallow gradients, resume, round-trip."""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from esrag.encoder import EspressoEncoder
from esrag.train import TrainConfig, Trainer, train
from esrag.train.batching import Batch
from esrag.train.cli_args import add_train_arguments, config_from_args
from esrag.train.losses import ExpressLoss, InfoNCELoss, PairEmbeddings

WORDS = [
    "cat",
    "dog",
    "bird",
    "fish",
    "tree",
    "car",
    "house",
    "river",
    "city",
    "music",
    "paper",
    "cell",
    "gene",
    "protein",
    "drug",
    "cancer",
    "virus",
    "study",
    "data",
    "model",
    "search",
    "index",
    "query",
    "vector",
]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random 3-layer, 32-dim BERT whose tokenizer knows every word of ``WORDS``.

    Built here rather than with the shared ``tiny_model_dir``: transformers 5's
    ``BertTokenizerFast`` reads ``vocab=`` and ignores ``vocab_file=``, so a tokenizer built
    the older way maps every word to [UNK] and all texts look alike to the model.
    """
    from transformers import BertConfig, BertModel, BertTokenizerFast

    folder = tmp_path_factory.mktemp("tiny-bert-train")
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS, "red", "big", "runs"]
    tokenizer = BertTokenizerFast(vocab={w: i for i, w in enumerate(vocab)}, model_max_length=64)
    tokenizer.save_pretrained(folder)
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        num_hidden_layers=3,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=64,
    )
    torch.manual_seed(0)
    BertModel(config).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def pairs_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """48 (anchor, positive) rows: a 2-word topic → a 5-word text starting with it."""
    rng = random.Random(0)
    folder = tmp_path_factory.mktemp("train-data")
    rows = []
    for _ in range(48):
        words = rng.sample(WORDS, 5)
        rows.append({"anchor": " ".join(words[:2]), "positive": " ".join(words)})
    path = folder / "pairs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def tiny_config(base: Path, data: Path, output: Path, **kwargs: object) -> TrainConfig:
    values: dict[str, object] = dict(
        train=(str(data),),
        output=str(output),
        base=str(base),
        batch_size=8,
        compress_dim=8,
        max_steps=6,
        lr=1e-3,
        save_every=2,
        device="cpu",
        show_progress=False,
        log_every=1,
    )
    values.update(kwargs)
    return TrainConfig(**values)  # type: ignore[arg-type]


def test_gradients_reach_shallow_layers(model_dir: Path) -> None:
    enc = EspressoEncoder(model_dir, device="cpu")
    enc.model.train()
    texts_a, texts_p = ["cat dog", "red car", "big tree"], ["cat dog runs", "red car", "tree"]
    a = enc.pooled_layers(enc.tokenize(texts_a), [1, 3])
    p = enc.pooled_layers(enc.tokenize(texts_p), [1, 3])
    loss, _ = ExpressLoss(InfoNCELoss())({1: PairEmbeddings(a[1], p[1])}, PairEmbeddings(a[3], p[3]))
    loss.backward()
    layers = enc.model.encoder.layer
    first = [q.grad for q in layers[0].parameters()]
    assert all(g is not None for g in first) and sum(g.abs().sum() for g in first) > 0
    # layer 1's embedding does not depend on layers 2-3; the detached teacher sends nothing
    assert all(q.grad is None or q.grad.abs().sum() == 0 for q in layers[2].parameters())


def _probe_loss(trainer: Trainer, enc: EspressoEncoder, rows: list[dict]) -> float:
    enc.model.eval()
    batch = Batch(0, [r["anchor"] for r in rows], [r["positive"] for r in rows], None, None)
    with torch.no_grad():
        loss = trainer._loss(enc, batch).parts
    return loss["base_L3"] + loss["base_L1"]


def test_a_few_steps_reduce_the_loss(model_dir: Path, pairs_file: Path, tmp_path: Path) -> None:
    rows = [json.loads(line) for line in pairs_file.read_text().splitlines()][:16]
    cfg = tiny_config(
        model_dir, pairs_file, tmp_path / "model", max_steps=12, compress=False, lr=3e-3, save_every=0
    )
    probe = Trainer(cfg)
    probe.layers = [1, 2, 3]
    probe.infonce, probe.cosent, _ = probe._losses()
    before = _probe_loss(probe, EspressoEncoder(model_dir, device="cpu"), rows)
    result = train(cfg)
    after = _probe_loss(probe, EspressoEncoder(result.output, device="cpu"), rows)
    assert result.steps == 12 and result.final_loss is not None
    assert after < before - 0.1


def _weights(folder: str | Path) -> dict[str, torch.Tensor]:
    return load_file(str(Path(folder) / "model.safetensors"))


def test_resume_after_interruption_matches_uninterrupted_run(
    model_dir: Path, pairs_file: Path, tmp_path: Path
) -> None:
    reference = train(tiny_config(model_dir, pairs_file, tmp_path / "a"))
    rng_after_reference = torch.get_rng_state()
    cfg = tiny_config(model_dir, pairs_file, tmp_path / "b")

    def crash(step: int, _parts: dict[str, float]) -> None:
        if step == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(cfg, on_step=crash)
    assert not (tmp_path / "b").exists()
    state = json.loads((tmp_path / "b-checkpoints" / "step-00000002" / "state.json").read_text())
    assert state["step"] == 2
    resumed = train(cfg)
    # dropout drew from the restored RNG: the generator ends where the uninterrupted one did
    assert torch.equal(torch.get_rng_state(), rng_after_reference)
    assert resumed.resumed_from == 2 and resumed.steps == 6
    first, second = _weights(reference.output), _weights(resumed.output)
    assert first.keys() == second.keys()
    for name in first:
        assert torch.equal(first[name], second[name]), name
    with pytest.raises(ValueError, match=r"different configuration \(lr differ\)"):
        train(tiny_config(model_dir, pairs_file, tmp_path / "b", lr=5e-4))


def test_saved_model_round_trips_and_eval_keeps_best(
    model_dir: Path, pairs_file: Path, tmp_path: Path
) -> None:
    from transformers import AutoModel

    cfg = tiny_config(
        model_dir,
        pairs_file,
        tmp_path / "m",
        eval_fraction=0.25,
        eval_every=2,
        max_steps=4,
        keep_checkpoints=1,
    )
    result = train(cfg)
    assert result.best_step is not None and result.best_score is not None
    assert result.eval_examples > 0 and result.last_eval is not None
    best = json.loads((tmp_path / "m-checkpoints" / "best" / "best.json").read_text())
    assert best["step"] == result.best_step
    assert len(list((tmp_path / "m-checkpoints").glob("step-*"))) == 1  # pruned
    enc = EspressoEncoder(result.output, device="cpu")
    again = EspressoEncoder(tmp_path / "m-checkpoints" / "best" / "model", device="cpu")
    texts = ["cat dog", "gene protein drug"]
    np.testing.assert_array_equal(enc.encode(texts), again.encode(texts))
    hf = AutoModel.from_pretrained(result.output)
    for name, tensor in hf.state_dict().items():
        assert torch.equal(tensor, enc.model.state_dict()[name]), name
    manifest = json.loads((tmp_path / "m" / "esrag_train.json").read_text())
    assert manifest["result"]["best_step"] == result.best_step
    assert TrainConfig.from_json(manifest["config"]) == cfg


def test_scored_data_and_cli_arguments(model_dir: Path, tmp_path: Path) -> None:
    data = tmp_path / "scored.csv"
    rng = random.Random(1)
    lines = ["sentence1,sentence2,score"]
    for _ in range(16):
        a, b = rng.sample(WORDS, 2)
        lines.append(f"{a} {b},{b} {a},{rng.uniform(0, 5):.2f}")
    data.write_text("\n".join(lines) + "\n")
    parser = add_train_arguments(argparse.ArgumentParser())
    args = parser.parse_args(
        [
            "--train",
            str(data),
            "--output",
            str(tmp_path / "s"),
            "--base",
            str(model_dir),
            "--batch-size",
            "8",
            "--compress-dim",
            "8",
            "--max-steps",
            "2",
            "--device",
            "cpu",
            "--score-range",
            "0",
            "5",
            "--no-express",
            "--layers",
            "1",
            "--no-show-progress",
        ]
    )
    cfg = config_from_args(args)
    assert cfg.express is False and cfg.layers == (1,) and cfg.score_range == (0.0, 5.0)
    result = train(cfg)
    assert result.steps == 2
    assert set(result.history[-1]) >= {"step", "loss", "lr"}


def test_model_shape_errors(model_dir: Path, pairs_file: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="compress_dim 64 exceeds the model's hidden size 32"):
        train(tiny_config(model_dir, pairs_file, tmp_path / "x", compress_dim=64))
    with pytest.raises(ValueError, match=r"layers\[0\] = 3 is not a shallow layer"):
        train(tiny_config(model_dir, pairs_file, tmp_path / "y", layers=(3,)))


def test_gradient_checkpointing_and_cpu_precision_fallback(
    model_dir: Path, pairs_file: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cfg = tiny_config(
        model_dir,
        pairs_file,
        tmp_path / "gc",
        max_steps=2,
        save_every=0,
        gradient_checkpointing=True,
        precision="bf16",
        grad_accum=2,
    )
    with caplog.at_level("WARNING", logger="esrag.train.trainer"):
        result = train(cfg)
    assert result.steps == 2 and result.final_loss is not None
    assert "precision bf16 needs CUDA; training in fp32" in caplog.text
    assert EspressoEncoder(result.output, device="cpu").encode(["cat"]).shape == (1, 32)
