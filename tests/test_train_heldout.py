"""Held-out selection end to end on the tiny BERT: noise keeps the base, held-out queries stay
out of training, resume keeps the split and the best, graded qrels, mining, defaults."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from esrag.cli.main import main
from esrag.data import DataError
from esrag.encoder import EspressoEncoder
from esrag.train import TrainConfig, train
from esrag.train.data import load_source, load_sources
from esrag.train.defaults import resolve
from esrag.train.negatives import mine_negatives
from esrag.train.prepare import prepare
from tests.test_train_trainer import WORDS, model_dir, tiny_config

__all__ = ["model_dir"]  # the fixture, shared with the trainer's tests


def _rows(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _topic_pairs(count: int, seed: int) -> list[dict]:
    """A 2-word topic → a 5-word text starting with it (the base model already ranks these)."""
    rng = random.Random(seed)
    rows = []
    for _ in range(count):
        words = rng.sample(WORDS, 5)
        rows.append({"anchor": " ".join(words[:2]), "positive": " ".join(words)})
    return rows


def _noise_pairs(count: int, seed: int) -> list[dict]:
    """Anchors paired with texts that share no word with them: pure noise."""
    rng = random.Random(seed)
    rows = []
    for _ in range(count):
        words = rng.sample(WORDS, 7)
        rows.append({"anchor": " ".join(words[:2]), "positive": " ".join(words[2:])})
    return rows


def _config(base: Path, data: Path, output: Path, **kwargs: object) -> TrainConfig:
    return tiny_config(base, data, output, **{"save_every": 0, **kwargs})


def _weights(folder: str | Path) -> dict[str, torch.Tensor]:
    return load_file(str(Path(folder) / "model.safetensors"))


def test_pure_noise_training_keeps_the_base_model_and_strict_fails(
    model_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    noise = _rows(tmp_path / "noise.jsonl", _noise_pairs(64, 0))
    held = _rows(tmp_path / "held.jsonl", _topic_pairs(24, 1))
    options = dict(eval=(str(held),), eval_every=2, lr=5e-3, early_stopping=0)
    with caplog.at_level("INFO", logger="esrag.train"):
        result = train(_config(model_dir, noise, tmp_path / "m", **options))
    assert result.kept_base and result.best_step == 0 and result.base_eval is not None
    assert result.best_score == result.base_eval["full"]  # the output scores what the base scored
    assert [r["step"] for r in result.history if "eval" in r] == [2, 4, 6]
    assert all(r["eval"] < result.base_eval["full"] for r in result.history if "eval" in r)
    assert "WARNING: training did not beat the base model on the held-out slice" in caplog.text
    assert "The output is the base model, unchanged" in result.summary()
    base, out = _weights(model_dir), _weights(tmp_path / "m")
    assert all(torch.equal(base[name], out[name]) for name in base)

    common = ["--train", str(noise), "--eval", str(held), "--base", str(model_dir), "--device", "cpu"]
    common += ["--batch-size", "8", "--compress-dim", "8", "--max-steps", "4", "--eval-every", "2"]
    common += ["--lr", "5e-3", "--no-show-progress"]
    assert main(["train", *common, "--output", str(tmp_path / "lenient")]) == 0
    assert main(["train", *common, "--output", str(tmp_path / "strict"), "--strict"]) == 1
    err = capsys.readouterr().err
    assert "esrag train: error: --strict: training did not beat the base model" in err
    assert (tmp_path / "strict" / "esrag.json").is_file()  # the base model was still written


def _beir(folder: Path, queries: int = 60) -> Path:
    """A BEIR folder whose queries each judge 1-3 documents (grades 1 and 2)."""
    rng = random.Random(0)
    (folder / "qrels").mkdir(parents=True)
    docs = [{"_id": f"d{i}", "title": "", "text": " ".join(rng.sample(WORDS, 5))} for i in range(120)]
    _rows(folder / "corpus.jsonl", docs)
    _rows(
        folder / "queries.jsonl", [{"_id": f"q{i}", "text": f"{WORDS[i % 24]} {i}"} for i in range(queries)]
    )
    lines = ["query-id\tcorpus-id\tscore"]
    for q in range(queries):
        for d in rng.sample(range(120), rng.randint(1, 3)):
            lines.append(f"q{q}\td{d}\t{rng.choice((1, 2))}")
    (folder / "qrels" / "train.tsv").write_text("\n".join(lines) + "\n")
    return folder


def test_heldout_queries_never_appear_in_training_batches(model_dir: Path, tmp_path: Path) -> None:
    folder = _beir(tmp_path / "beir")
    cfg = _config(model_dir, folder, tmp_path / "o", eval_fraction=0.2, hard_negatives=True, negative_skip=1)
    enc = EspressoEncoder(model_dir, device="cpu")
    data = prepare(cfg, load_sources(cfg), enc, None)
    held = set(data.holdout)
    assert len(held) == 12 and data.slices and set(data.slices[0].queries) == held
    (source,) = data.train
    relevant = source.relevant()
    assert data.negatives["0"] and source.negatives is not None
    assert all(n not in relevant[a] for a, n in zip(source.anchors, source.negatives, strict=True))
    for index in range(3 * data.plan.per_epoch):
        batch = data.plan.micro_batch(index)
        assert not held & set(batch.anchors)
        assert len(set(batch.anchors)) == len(batch.anchors)  # one query does not fill a batch


def test_resume_keeps_the_heldout_split_and_the_best_so_far(model_dir: Path, tmp_path: Path) -> None:
    data = _rows(tmp_path / "pairs.jsonl", _topic_pairs(48, 0))
    cfg = _config(model_dir, data, tmp_path / "m", eval_fraction=0.25, eval_every=2, keep_checkpoints=5)

    def stop(step: int, _parts: dict[str, float]) -> None:
        if step == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(cfg, on_step=stop)
    root = tmp_path / "m-checkpoints"
    before = json.loads((root / "step-00000003" / "state.json").read_text())
    assert before["holdout"] and before["selection"]["base"]["step"] == 0
    # new rows (with new queries) arrive before the resume: a fresh split would differ
    _rows(data, _topic_pairs(48, 0) + _topic_pairs(40, 5))
    resumed = train(cfg)
    assert resumed.resumed_from == 3 and resumed.steps == 6
    after = json.loads((root / "step-00000006" / "state.json").read_text())
    assert after["holdout"] == before["holdout"]
    assert after["selection"]["base"] == before["selection"]["base"]
    assert resumed.history[:3] == before["history"]
    best = before["selection"]["best"]
    assert resumed.best_step in (best["step"], 4, 6)  # the best so far stands unless beaten later
    if resumed.best_step == best["step"]:
        assert resumed.best_score == best["scores"]["score"]


def test_min_grade_turns_low_grades_into_masked_judgments(tmp_path: Path) -> None:
    folder = _beir(tmp_path / "beir")
    cfg = TrainConfig(train=(str(folder),), output="unused", min_grade=2)
    (ex,) = load_source(str(folder), cfg)
    (every,) = load_source(str(folder), TrainConfig(train=(str(folder),), output="unused"))
    assert 0 < len(ex) < len(every)
    assert ex.judged is not None
    low = [(a, d) for a, docs in ex.judged.items() for d, g in docs.items() if g == 1]
    assert low and not {(a, p) for a, p in zip(ex.anchors, ex.positives, strict=True)} & set(low)
    with pytest.raises(DataError, match=r"no judgments of grade >= min_grade 3 to train on \(highest: 2\)"):
        load_source(str(folder), TrainConfig(train=(str(folder),), output="unused", min_grade=3))


def test_mined_negatives_skip_the_top_ranks_and_judged_documents(model_dir: Path, tmp_path: Path) -> None:
    folder = _beir(tmp_path / "beir")
    (ex,) = load_source(str(folder), TrainConfig(train=(str(folder),), output="unused"))
    enc = EspressoEncoder(model_dir, device="cpu")
    picks, vectors = mine_negatives(enc, ex, skip=2, depth=10, seed=0)
    assert len(picks) == len(ex) and vectors.shape[0] == len(set(ex.corpus or []))
    pool = list(dict.fromkeys(ex.corpus or []))
    relevant = ex.relevant()
    queries = enc.encode(list(ex.anchors), [(3, 32)])[0]
    for row, pick in enumerate(picks):
        ranks = list((-(queries[row] @ vectors.T)).argsort(kind="stable"))
        assert pool[pick] not in relevant[ex.anchors[row]]
        assert 2 <= ranks.index(pick) < 10


def test_settings_come_from_the_data(model_dir: Path, tmp_path: Path) -> None:
    data = _rows(tmp_path / "pairs.jsonl", _topic_pairs(48, 0))
    enc = EspressoEncoder(model_dir, device="cpu")
    cfg = TrainConfig(train=(str(data),), output="unused", base=str(model_dir))
    (ex,) = load_source(str(data), cfg)
    settings = resolve(cfg, [ex], per_epoch=6, encoder=enc, evaluates=True)
    # 48 rows: 3 epochs (the most), 18 steps; short texts: 32 tokens; warmup 10%
    assert (settings.max_length, settings.total_steps, settings.warmup_steps) == (32, 18, 2)
    assert settings.eval_every == 3
    assert settings.lines[0].startswith("max_length 32: 90% of the training texts fit in")
    given = resolve(
        TrainConfig(train=(str(data),), output="u", max_length=16, epochs=1, warmup_ratio=0.5, eval_every=0),
        [ex],
        per_epoch=6,
        encoder=enc,
        evaluates=True,
    )
    assert (given.max_length, given.total_steps, given.warmup_steps, given.eval_every) == (16, 6, 3, 0)


def test_early_stopping_ends_a_run_that_stops_improving(
    model_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    noise = _rows(tmp_path / "noise.jsonl", _noise_pairs(64, 0))
    held = _rows(tmp_path / "held.jsonl", _topic_pairs(24, 1))
    options = dict(eval=(str(held),), eval_every=2, lr=5e-3, max_steps=12, early_stopping=2)
    with caplog.at_level("INFO", logger="esrag.train"):
        result = train(_config(model_dir, noise, tmp_path / "m", **options))
    # the noise run above: every evaluation falls below the base, none is chosen
    assert result.steps == 4 < result.total_steps == 12 and result.kept_base
    assert "early stop at step 4: 2 evaluations without improvement" in caplog.text
