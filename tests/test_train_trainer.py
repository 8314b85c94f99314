"""The training loop on the tiny random BERT: learning, shallow gradients, resume, round-trip."""

from __future__ import annotations

import argparse
import json
import math
import random
from collections.abc import Callable
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
        compress=True,  # the whole ESE objective (off by default), so resume covers the PCA state
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


def test_loss_runs_in_float32_with_autocast_off(
    model_dir: Path, pairs_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import esrag.train.losses.infonce as infonce

    real = infonce.cosine_logits
    seen: list[tuple[torch.dtype, bool]] = []

    def logits(batch: PairEmbeddings, scale: float) -> torch.Tensor:
        seen.append((batch.anchors.dtype, torch.is_autocast_enabled("cpu")))
        return real(batch, scale)

    monkeypatch.setattr(infonce, "cosine_logits", logits)
    trainer = Trainer(tiny_config(model_dir, pairs_file, tmp_path / "o"))
    trainer.layers = [1, 3]
    trainer.infonce, trainer.cosent, _ = trainer._losses()
    trainer._amp_dtype = torch.bfloat16  # what fit() sets for bf16 on CUDA; CPU autocast here
    enc = EspressoEncoder(model_dir, device="cpu")
    with torch.no_grad():
        out = trainer._loss(enc, Batch(0, ["cat dog", "red car"], ["cat dog runs", "red car"], None, None))
    assert out.loss.dtype == torch.float32 and math.isfinite(out.parts["loss"])
    # the encoder ran under autocast; the loss saw float32 embeddings with autocast off
    assert seen and all(item == (torch.float32, False) for item in seen)


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
    # the interrupt checkpointed the finished step 3 (and pruned step 2: keep_checkpoints=1)
    state = json.loads((tmp_path / "b-checkpoints" / "step-00000003" / "state.json").read_text())
    assert state["step"] == 3
    assert not (tmp_path / "b-checkpoints" / "step-00000002").exists()
    resumed = train(cfg)
    # dropout drew from the restored RNG: the generator ends where the uninterrupted one did
    assert torch.equal(torch.get_rng_state(), rng_after_reference)
    assert resumed.resumed_from == 3 and resumed.steps == 6
    assert resumed.history == reference.history
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


def _interrupt_loss_call(monkeypatch: pytest.MonkeyPatch, call: int, *, after: bool) -> None:
    """Make the ``call``-th ``Trainer._loss`` raise KeyboardInterrupt (``after``: once the
    forward pass ran, so dropout's RNG and the running PCA have moved on)."""
    real = Trainer._loss
    calls = {"n": 0}

    def loss(self: Trainer, enc: EspressoEncoder, batch: Batch):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if calls["n"] == call and not after:
            raise KeyboardInterrupt
        out = real(self, enc, batch)
        if calls["n"] == call:
            raise KeyboardInterrupt
        return out

    monkeypatch.setattr(Trainer, "_loss", loss)


def test_resume_after_an_eval_step_checkpoint_keeps_its_history(
    model_dir: Path, pairs_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    options = dict(eval_fraction=0.25, eval_every=2, save_every=0, keep_checkpoints=3)
    reference = train(tiny_config(model_dir, pairs_file, tmp_path / "a", **options))
    assert [r["step"] for r in reference.history if "eval" in r] == [2, 4, 6]
    cfg = tiny_config(model_dir, pairs_file, tmp_path / "b", **options)
    with monkeypatch.context() as patch:
        _interrupt_loss_call(patch, 3, after=False)  # the forward pass of step 3
        with pytest.raises(KeyboardInterrupt):
            train(cfg)
    root = tmp_path / "b-checkpoints"
    # steps 0 and 2 were checkpointed at their evaluations; the interrupt found step 2 there
    assert [p.name for p in sorted(root.glob("step-*"))] == ["step-00000000", "step-00000002"]
    state = json.loads((root / "step-00000002" / "state.json").read_text())
    assert [r["step"] for r in state["history"]] == [1, 2] and "eval" in state["history"][-1]
    resumed = train(cfg)
    assert resumed.resumed_from == 2
    assert resumed.history == reference.history
    assert (resumed.best_step, resumed.best_score) == (reference.best_step, reference.best_score)
    first, second = _weights(reference.output), _weights(resumed.output)
    for name in first:
        assert torch.equal(first[name], second[name]), name


def test_keyboard_interrupt_mid_step_checkpoints_the_last_finished_step(
    model_dir: Path,
    pairs_file: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    options = dict(save_every=0, grad_accum=2)  # no checkpoint before the end but the interrupt's
    reference = train(tiny_config(model_dir, pairs_file, tmp_path / "a", **options))
    cfg = tiny_config(model_dir, pairs_file, tmp_path / "b", **options)
    with monkeypatch.context() as patch:
        _interrupt_loss_call(patch, 9, after=True)  # 1st micro-batch of step 5, after its forward
        with caplog.at_level("WARNING", logger="esrag.train.trainer"), pytest.raises(KeyboardInterrupt):
            train(cfg)
    assert "interrupted at step 4; run the same command again to resume from step 4" in caplog.text
    root = tmp_path / "b-checkpoints"
    assert [p.name for p in sorted(root.glob("step-*"))] == ["step-00000004"]
    assert not list(root.glob(".step-*"))  # written atomically: no temporary folder left
    resumed = train(cfg)
    assert resumed.resumed_from == 4 and resumed.steps == 6
    assert resumed.history == reference.history
    first, second = _weights(reference.output), _weights(resumed.output)
    for name in first:  # the checkpoint holds step 4's RNG and PCA, not the aborted forward's
        assert torch.equal(first[name], second[name]), name


def test_keyboard_interrupt_inside_an_update_keeps_the_previous_checkpoint(
    model_dir: Path, pairs_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = torch.nn.utils.clip_grad_norm_
    calls = {"n": 0}

    def clip(*args: object, **kwargs: object) -> torch.Tensor:
        calls["n"] += 1
        if calls["n"] == 4:  # inside step 4's optimizer update: no consistent state to save
            raise KeyboardInterrupt
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", clip)
    with pytest.raises(KeyboardInterrupt):
        train(tiny_config(model_dir, pairs_file, tmp_path / "b", keep_checkpoints=5))
    root = tmp_path / "b-checkpoints"
    assert [p.name for p in sorted(root.glob("step-*"))] == ["step-00000002"]


def test_output_and_checkpoint_folders_are_only_replaced_when_ours(
    model_dir: Path, pairs_file: Path, tmp_path: Path
) -> None:
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(
        ValueError,
        match=r"foreign: output exists and is not an esrag encoder folder \(no esrag\.json\); "
        r"refusing to replace it",
    ):
        train(tiny_config(model_dir, pairs_file, foreign))
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match=r"file: output exists and is not a folder"):
        train(tiny_config(model_dir, pairs_file, tmp_path / "file"))
    with pytest.raises(
        ValueError,
        match=r"foreign: checkpoint folder exists and is not an esrag checkpoint folder "
        r"\(it holds 'notes\.txt'\); refusing to delete it",
    ):
        train(tiny_config(model_dir, pairs_file, tmp_path / "m", resume=False, checkpoint_dir=str(foreign)))
    with pytest.raises(ValueError, match=r"file: checkpoint folder exists .*\(it is a file\)"):
        cfg = tiny_config(
            model_dir, pairs_file, tmp_path / "m", resume=False, checkpoint_dir=str(tmp_path / "file")
        )
        train(cfg)
    assert (foreign / "notes.txt").read_text() == "mine" and (tmp_path / "file").read_text() == "x"
    assert not (tmp_path / "m").exists()
    # our own output and checkpoints are replaced when starting over; an empty output is fine
    (tmp_path / "m").mkdir()
    options = dict(max_steps=2, save_every=1, keep_checkpoints=5)
    train(tiny_config(model_dir, pairs_file, tmp_path / "m", **options))
    (tmp_path / "m-checkpoints" / ".step-00000009.tmp-x").mkdir()  # a stale atomic_folder temp
    again = train(tiny_config(model_dir, pairs_file, tmp_path / "m", resume=False, **options))
    assert again.resumed_from is None and again.steps == 2
    assert sorted(p.name for p in (tmp_path / "m-checkpoints").iterdir()) == [
        "step-00000001",
        "step-00000002",
    ]
    assert (tmp_path / "m" / "esrag.json").is_file()


def test_gradient_checkpointing_and_cpu_precision_fallback(
    model_dir: Path,
    pairs_file: Path,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real = Trainer._loss
    seen: list[tuple[bool, bool]] = []

    def loss(self: Trainer, enc: EspressoEncoder, batch: Batch):  # type: ignore[no-untyped-def]
        model = enc.model  # transformers 5 renamed is_gradient_checkpointing
        enabled = getattr(model, "is_activation_checkpointing", None)
        if enabled is None:
            enabled = model.is_gradient_checkpointing
        seen.append((bool(enabled), model.training))
        return real(self, enc, batch)

    monkeypatch.setattr(Trainer, "_loss", loss)
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
    # every micro-batch ran on the model in training mode with checkpointing switched on
    assert seen == [(True, True)] * 4
    assert "precision bf16 needs CUDA; training in fp32" in caplog.text
    assert EspressoEncoder(result.output, device="cpu").encode(["cat"]).shape == (1, 32)


def _stop_after(last: int) -> Callable[[int, dict[str, float]], None]:
    """An ``on_step`` that interrupts the run once step ``last`` is done."""

    def on_step(step: int, _parts: dict[str, float]) -> None:
        if step == last:
            raise KeyboardInterrupt

    return on_step


def test_a_checkpoint_written_before_the_typed_state_resumes(
    model_dir: Path, pairs_file: Path, tmp_path: Path
) -> None:
    """Before checkpoint.TrainState the scheduler's ``lr_lambdas`` were saved as None (the
    schedule was a nested function); every other entry of state.pt/state.json is unchanged."""
    reference = train(tiny_config(model_dir, pairs_file, tmp_path / "a"))
    cfg = tiny_config(model_dir, pairs_file, tmp_path / "b")
    with pytest.raises(KeyboardInterrupt):
        train(cfg, on_step=_stop_after(3))
    state_pt = tmp_path / "b-checkpoints" / "step-00000003" / "state.pt"
    tensors = torch.load(state_pt, weights_only=True)
    tensors["scheduler"]["lr_lambdas"] = [None] * len(tensors["scheduler"]["lr_lambdas"])
    torch.save(tensors, state_pt)
    resumed = train(cfg)
    assert resumed.resumed_from == 3 and resumed.history == reference.history
    first, second = _weights(reference.output), _weights(resumed.output)
    for name in first:
        assert torch.equal(first[name], second[name]), name


def test_selection_keeps_the_earlier_best_on_a_tie(model_dir: Path, pairs_file: Path, tmp_path: Path) -> None:
    from esrag.train.checkpoint import Best, RngState
    from esrag.train.loop import Progress, Snapshot

    trainer = Trainer(tiny_config(model_dir, pairs_file, tmp_path / "o"))
    progress = Progress(0, [], None, None, None, Snapshot(RngState.capture(), {}))
    run = argparse.Namespace(progress=progress)  # _select reads only the run's progress
    assert trainer._select(run, {"score": 0.5}) == Best(0, 0.5, {"score": 0.5})  # type: ignore[arg-type]
    progress.step = 2
    assert trainer._select(run, {"score": 0.5}) is None  # type: ignore[arg-type]
    assert trainer._select(run, {"score": 0.25}) is None  # type: ignore[arg-type]
    progress.step = 4
    assert trainer._select(run, {"score": 0.75}) == Best(4, 0.75, {"score": 0.75})  # type: ignore[arg-type]
    assert progress.best == Best(4, 0.75, {"score": 0.75})
