"""Every validation message of the trainer, the training data, the losses, BEIR reading, the
evaluation helpers and the CLI, each checked by its text (and the CLI's by exit code + stderr)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch

from esrag.cli._common import CliError
from esrag.cli.main import main
from esrag.data import DataError, load_qrels, load_queries
from esrag.data.corpus import CorpusSpec, read_corpus
from esrag.evaluation.cascade import evaluate_cascade, evaluate_encoded
from esrag.evaluation.metrics import require_judged_queries
from esrag.evaluation.plot import plot_sweep
from esrag.evaluation.sweep import SweepGrid, SweepResult, run_sweep
from esrag.evaluation.tune import sweep_index
from esrag.evaluation.vectors import sample_doc_queries
from esrag.train import TrainConfig, Trainer
from esrag.train.batching import BatchPlan
from esrag.train.data import Examples, load_source, load_training_data
from esrag.train.losses import (
    CompressLoss,
    CoSENTLoss,
    ESELoss,
    ExpressLoss,
    InfoNCELoss,
    PairEmbeddings,
    RunningPCA,
)


def config(*sources: str | Path, **kwargs: Any) -> TrainConfig:
    kwargs.setdefault("output", "unused")
    return TrainConfig(train=tuple(str(s) for s in sources) or ("x",), **kwargs)


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


# ---------------------------------------------------------------------- TrainConfig
@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"lr": 0}, ValueError, r"lr has an invalid value 0"),
        ({"warmup_ratio": 1.0}, ValueError, r"warmup_ratio has an invalid value 1\.0"),
        ({"scale": "big"}, ValueError, r"scale has an invalid value 'big'"),
        ({"pca_momentum": None}, ValueError, r"pca_momentum has an invalid value None"),
        ({"epochs": True}, ValueError, r"epochs has an invalid value True"),
        ({"batch_size": 0}, ValueError, r"batch_size must be an int >= 1, got 0"),
        ({"max_length": 1}, ValueError, r"max_length must be an int >= 2, got 1"),
        ({"seed": -1}, ValueError, r"seed must be an int >= 0, got -1"),
        ({"max_steps": 2.5}, ValueError, r"max_steps must be an int >= 1, got 2\.5"),
        ({"output": ""}, ValueError, r"output must be a non-empty folder path, got ''"),
        ({"output": None}, ValueError, r"output must be a non-empty folder path, got None"),
        ({"layers": 5}, TypeError, r"layers must be a list of int, got 5"),
        ({"eval_views": (2,)}, TypeError, r"eval_views\[0\] must be a str, got 2"),
        ({"score_range": ("a", 1)}, TypeError, r"score_range\[0\] must be a number, got 'a'"),
        ({"score_range": (0, 1, 2)}, ValueError, r"score_range must be \(low, high\), got \(0, 1, 2\)"),
        ({"layers": (0,)}, ValueError, r"layers\[0\] must be >= 1, got 0"),
        ({"prefix_dims": (8, -1)}, ValueError, r"prefix_dims\[1\] must be >= 1, got -1"),
        ({"precision": "fp8"}, ValueError, r"precision must be one of 'auto', 'fp32', 'fp16', 'bf16'"),
    ],
)
def test_train_config_messages(kwargs: dict[str, Any], error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        config(**kwargs)


def test_train_config_from_json_unknown_fields() -> None:
    data = config().to_json()
    data.update(bogus=1, another=2)
    with pytest.raises(ValueError, match=r"unknown TrainConfig fields: another, bogus"):
        TrainConfig.from_json(data)


def test_trainer_needs_a_train_config() -> None:
    with pytest.raises(TypeError, match=r"config must be a TrainConfig, got dict"):
        Trainer({"train": ["x"], "output": "o"})  # type: ignore[arg-type]


# ---------------------------------------------------------------------- training data
def test_data_value_messages(tmp_path: Path) -> None:
    typed = write_jsonl(
        tmp_path / "typed.jsonl", [{"anchor": "a", "positive": "b"}, {"anchor": 5, "positive": "c"}]
    )
    with pytest.raises(DataError, match=r"typed\.jsonl:2: field 'anchor': row 2: expected text, got int 5"):
        load_source(str(typed), config())
    scored = write_jsonl(tmp_path / "scored.jsonl", [{"text1": "a", "text2": "b", "score": "high"}])
    with pytest.raises(
        DataError, match=r"scored\.jsonl:1: field 'score': row 1: expected a finite number, got 'high'"
    ):
        load_source(str(scored), config(score_column="score"))
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(b"not parquet at all")
    with pytest.raises(DataError, match=r"bad\.parquet: could not read it as parquet: "):
        load_source(str(bad), config())
    pairs = write_jsonl(tmp_path / "pairs.jsonl", [{"anchor": "a", "positive": "b"}])
    with pytest.raises(
        DataError,
        match=r"pairs\.jsonl: field 'lang': where 'lang=en': column not found \(columns: anchor, positive\)",
    ):
        load_source(str(pairs), config(where=("lang=en",)))
    with pytest.raises(
        DataError, match=r"pairs\.jsonl: field 'title': corpus column not found; the columns are anchor"
    ):
        load_source(str(pairs), config(kind="corpus"))
    with pytest.raises(
        DataError, match=r"pairs\.jsonl: only 1 training row\(s\); in-batch training needs at least 2"
    ):
        load_training_data(config(pairs))
    folder = tmp_path / "plain"
    folder.mkdir()
    with pytest.raises(
        DataError, match=r"plain: a folder is only accepted as a BEIR dataset \(corpus\.jsonl"
    ):
        load_source(str(folder), config())


def test_data_file_shape_messages(tmp_path: Path) -> None:
    path = tmp_path / "x.json"
    path.write_text("42")
    with pytest.raises(DataError, match=r"x\.json: expected a JSON array of objects or JSON Lines, got int"):
        load_source(str(path), config())
    path.write_text("[]")
    with pytest.raises(DataError, match=r"x\.json: the file is empty \(an empty JSON array\)"):
        load_source(str(path), config())
    path.write_text('[{"anchor": "a", "positive": "b"}, "c"]')
    with pytest.raises(DataError, match=r"x\.json: element \[1\]: expected a JSON object, got str"):
        load_source(str(path), config())
    path.write_bytes(b'[{"anchor": "a",\n "positive": "\xff"}]')
    with pytest.raises(DataError, match=r"x\.json:2: not valid UTF-8 \(byte 14 of the line"):
        load_source(str(path), config())
    csv = tmp_path / "x.csv"
    csv.write_text("anchor,anchor\na,b\n")
    with pytest.raises(DataError, match=r"x\.csv:1: column 'anchor' appears twice in the header"):
        load_source(str(csv), config())
    csv.write_text("anchor,positive\na,b\n\nc,d,e\n")
    with pytest.raises(DataError, match=r"x\.csv:4: expected 2 columns like the header, got 3"):
        load_source(str(csv), config())
    csv.write_text("\n\n")
    with pytest.raises(DataError, match=r"x\.csv: the file is empty \(no header row\)"):
        load_source(str(csv), config())
    csv.write_text("anchor,positive\n" + "a," + "x" * 140_000 + "\n")
    with pytest.raises(DataError, match=r"x\.csv:2: not valid CSV: field larger than field limit"):
        load_source(str(csv), config())


def make_beir(folder: Path, qrels: str, queries: list[dict[str, Any]] | None = None) -> Path:
    (folder / "qrels").mkdir(parents=True)
    write_jsonl(folder / "corpus.jsonl", [{"_id": "d1", "text": "cats"}, {"_id": "d2", "text": "dogs"}])
    write_jsonl(
        folder / "queries.jsonl", queries or [{"_id": "q1", "text": "cat"}, {"_id": "q2", "text": "dog"}]
    )
    (folder / "qrels" / "train.tsv").write_text(qrels)
    return folder


def test_beir_training_messages(tmp_path: Path) -> None:
    zero = make_beir(tmp_path / "zero", "q1\td1\t0\nq2\td2\t0\n")
    with pytest.raises(DataError, match=r"zero/qrels/train\.tsv: no positive judgments to train on"):
        load_source(str(zero), config())
    blank = make_beir(tmp_path / "blank", "q1\td1\t1\n", [{"_id": "q1", "text": "  "}])
    with pytest.raises(DataError, match=r"blank/queries\.jsonl: field 'text': query 'q1' has an empty text"):
        load_source(str(blank), config())


def test_beir_reader_messages(tmp_path: Path) -> None:
    queries = write_jsonl(
        tmp_path / "queries.jsonl", [{"_id": "q1", "text": "a"}, {"_id": "q1", "text": "b"}]
    )
    with pytest.raises(
        DataError, match=r"queries\.jsonl:2: field '_id': duplicate query id 'q1' \(first on line 1\)"
    ):
        load_queries(queries)
    tsv = tmp_path / "queries.tsv"
    tsv.write_text("q1\tfirst\nnothing\n")
    with pytest.raises(DataError, match=r"queries\.tsv:2: expected 'id<TAB>text', got 'nothing'"):
        load_queries(tsv)
    tsv.write_text("id\ttext\n\n")
    with pytest.raises(DataError, match=r"queries\.tsv: the file is empty \(no queries\)"):
        load_queries(tsv)
    qrels = tmp_path / "q.tsv"
    qrels.write_text("q1\td1\t1\n\td2\t1\n")
    with pytest.raises(DataError, match=r"q\.tsv:2: empty query-id or corpus-id"):
        load_qrels(qrels)
    qrels.write_text("query-id\tcorpus-id\tscore\n")
    with pytest.raises(DataError, match=r"q\.tsv: the qrels file has no judgments"):
        load_qrels(qrels)


def test_corpus_record_messages(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "c.jsonl", [{"id": 1.5, "text": "x"}])
    with pytest.raises(DataError, match=r"c\.jsonl:1: field 'id': expected a string or int, got float"):
        list(read_corpus(path))
    write_jsonl(path, [{"id": "a", "text": "x", "title": 3}])
    with pytest.raises(DataError, match=r"c\.jsonl:1: field 'title': expected a string, got int"):
        list(read_corpus(path))
    write_jsonl(path, [{"id": "a", "text": "x", "tags": [1]}])
    with pytest.raises(
        DataError, match=r"c\.jsonl:1: field 'tags': metadata must be a string, number or bool, got list"
    ):
        list(read_corpus(path, CorpusSpec(metadata_fields=("tags",))))
    csv = tmp_path / "c.csv"
    csv.write_text('id,text\na,"multi\nline"\nb,x,y\n')
    with pytest.raises(DataError, match=r"c\.csv:4: expected 2 columns like the header, got 3"):
        list(read_corpus(csv))


# ---------------------------------------------------------------------- batching and losses
def test_batching_needs_two_rows() -> None:
    with pytest.raises(ValueError, match=r"no training batches: every source has fewer than 2 rows"):
        BatchPlan([Examples("s", ["a"], ["b"])], batch_size=4, seed=0)


def test_loss_constructor_messages() -> None:
    with pytest.raises(ValueError, match=r"momentum must be in \[0, 1\), got 1\.0"):
        RunningPCA(1.0)
    with pytest.raises(ValueError, match=r"momentum must be in \[0, 1\), got -0\.5"):
        RunningPCA(-0.5)
    with pytest.raises(ValueError, match=r"dim must be >= 1, got 0"):
        CompressLoss(0)
    with pytest.raises(ValueError, match=r"temperature must be >= 0, got -1"):
        CompressLoss(4, temperature=-1)
    with pytest.raises(ValueError, match=r"temperature must be > 0, got 0"):
        ExpressLoss(InfoNCELoss(), temperature=0)
    with pytest.raises(ValueError, match=r"scale must be > 0, got 0"):
        InfoNCELoss(0)
    with pytest.raises(ValueError, match=r"scale must be > 0, got -1"):
        CoSENTLoss(-1)
    with pytest.raises(RuntimeError, match=r"RunningPCA\.components\(\) before any update\(\)"):
        RunningPCA(0.5).components(2)


def test_loss_shape_messages() -> None:
    two = torch.zeros(2, 2)
    with pytest.raises(ValueError, match=r"negatives must be \(2, 2\), got \(3, 2\)"):
        PairEmbeddings(two, two, negatives=torch.zeros(3, 2))
    with pytest.raises(ValueError, match=r"false_negatives must be \(2, 2\), got \(2, 3\)"):
        PairEmbeddings(two, two, false_negatives=torch.zeros(2, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"ESELoss needs the embeddings of at least one layer"):
        ESELoss(InfoNCELoss())({})


# ---------------------------------------------------------------------- evaluation
class _FakeIndex:
    def __init__(self, ids: list[str], texts: list[str]) -> None:
        self._ids, self._texts = ids, texts

    def __len__(self) -> int:
        return len(self._ids)

    def ids(self) -> list[str]:
        return list(self._ids)

    def get_by_ids(self, ids: list[str]) -> list[SimpleNamespace]:
        return [SimpleNamespace(text=t) for t in self._texts]


def test_cascade_evaluation_messages() -> None:
    qrels = {"q1": {"d1": 1}}
    with pytest.raises(ValueError, match=r"no query has judgments in the qrels \(do the query ids match\?\)"):
        evaluate_cascade(_FakeIndex([], []), {"q9": "text"}, qrels)
    with pytest.raises(ValueError, match=r"^the index is empty$"):
        evaluate_cascade(_FakeIndex([], []), {"q1": "text"}, qrels)
    judged = {f"q{i}": {"d1": 1} for i in range(8)}
    judged["q8"] = {"d1": 0}  # judged non-relevant only: never scored, so not required
    with pytest.raises(
        ValueError,
        match=r"^the qrels: 7 judged query id\(s\) have no query text: 'q1', 'q2', 'q3', 'q4', 'q5' "
        r"\(first 5 of 7\)",
    ):
        evaluate_cascade(_FakeIndex(["d1"], ["x"]), {"q0": "a", "q8": "b"}, judged)
    vectors = np.eye(2, dtype=np.float32)
    with pytest.raises(ValueError, match=r"the qrels: 1 judged query id\(s\) have no query text: 'q1';"):
        evaluate_encoded(
            _FakeIndex(["d1"], ["x"]), vectors[:1], vectors[:1], ["q0"], {"q0": {}, "q1": {"d": 2}}
        )
    with pytest.raises(ValueError, match=r"^qrels\.tsv: 1 judged query id\(s\) have no query text: 'b'"):
        require_judged_queries(["a"], {"a": {"d": 1}, "b": {"d": 1}}, where="qrels.tsv")


def test_sweep_messages(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match=r"the index is empty: nothing to sweep"):
        sweep_index(_FakeIndex([], []), None)
    with pytest.raises(ValueError, match=r"the index holds documents without stored text"):
        sweep_index(_FakeIndex(["d1", "d2"], ["x"]), None)
    with pytest.raises(ValueError, match=r"^qrels need queries$"):
        sweep_index(_FakeIndex(["d1"], ["x"]), None, qrels={"q1": {"d1": 1}})
    with pytest.raises(ValueError, match=r"no query has judgments in the qrels"):
        sweep_index(_FakeIndex(["d1"], ["x"]), None, queries={"q2": "y"}, qrels={"q1": {"d1": 1}})
    with pytest.raises(ValueError, match=r"the qrels: 1 judged query id\(s\) have no query text: 'q3'"):
        sweep_index(
            _FakeIndex(["d1"], ["x"]), None, queries={"q1": "y"}, qrels={"q1": {"d1": 1}, "q3": {"d1": 1}}
        )
    with pytest.raises(ValueError, match=r"sweep shortlist 0 must be >= 1"):
        SweepGrid((1,), (4,), ("prefix",), (0,)).validate(2, 16)
    with pytest.raises(ValueError, match=r"every sweep axis needs at least one value"):
        SweepGrid((1,), (4,), ("prefix",), ()).validate(2, 16)
    rng = np.random.default_rng(0)
    docs = rng.normal(size=(6, 8)).astype(np.float32)
    docs /= np.linalg.norm(docs, axis=1, keepdims=True)
    layers = {1: docs, 2: docs}
    queries = {1: docs[:2], 2: docs[:2]}
    common: dict[str, Any] = {
        "doc_ids": [f"d{i}" for i in range(6)],
        "qids": ["q0", "q1"],
        "fine_view": (2, 8),
    }
    with pytest.raises(
        ValueError, match=r"no sweep setting could be evaluated; skipped: 1:4 pca \(needs 8 docs to fit\)"
    ):
        run_sweep(layers, queries, grid=SweepGrid((1,), (4,), ("pca",), (2,)), timing_queries=0, **common)
    with pytest.raises(ValueError, match=r"the qrels: 1 judged query id\(s\) have no query text: 'q7'"):
        run_sweep(
            layers,
            queries,
            grid=SweepGrid((1,), (4,), ("prefix",), (2,)),
            qrels={"q0": {"d0": 1}, "q7": {"d1": 1}},
            timing_queries=0,
            **common,
        )
    with pytest.raises(ValueError, match=r"the number of sampled queries must be >= 1, got 0"):
        sample_doc_queries(["text"], 0)
    result = SweepResult([], {}, "ndcg@10", 0.9, None, {})
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(ImportError, match=r"plotting a sweep needs matplotlib: pip install esrag\[plot\]"):
        plot_sweep(result, tmp_path / "p.png")


# ---------------------------------------------------------------------- the CLI
def cli_error(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    """Run ``esrag ARGV``, expect exit code 2, and return stderr."""
    capsys.readouterr()
    assert main(argv) == 2
    return capsys.readouterr().err


def parse_error(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    """An argparse rejection: SystemExit(2) and the message on stderr."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    return capsys.readouterr().err


def test_run_recipe_messages(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    err = cli_error(capsys, ["run", "nope.toml"])
    assert "esrag run: error: nope.toml: no such pipeline file" in err
    recipe = tmp_path / "p.toml"
    recipe.write_bytes(b'[build]\ncorpus = "caf\xe9"\n')
    assert "p.toml:2: not valid UTF-8" in cli_error(capsys, ["run", "p.toml"])
    recipe.write_text('[build]\ncorpus = "c.jsonl"\n\nshortlist = [1,\n')
    assert "p.toml:5:1: invalid TOML: Invalid value\n" in cli_error(capsys, ["run", "p.toml"])
    recipe.write_text('[build]\ncorpus = "c.jsonl')
    assert "p.toml:2:18: invalid TOML: Unterminated string\n" in cli_error(capsys, ["run", "p.toml"])
    recipe.write_text('x = 1\n[build]\ncorpus = "c.jsonl"\n')
    assert "--set 'x.y=2': [x] is not a table" in cli_error(capsys, ["run", "p.toml", "--set", "x.y=2"])
    assert "--set 'nodot': expected SECTION.KEY=VALUE" in cli_error(
        capsys, ["run", "p.toml", "--set", "nodot"]
    )
    recipe.write_text('[build]\ncorpus = "c.jsonl"\n\n[bogus]\nk = 1\n')
    assert "p.toml:4: unknown section [bogus]; expected [pipeline] and steps" in cli_error(
        capsys, ["run", "p.toml"]
    )
    recipe.write_text('[pipeline]\nmodel = "m"\nbogus = 1\n[build]\ncorpus = "c.jsonl"\n')
    assert "p.toml:3: [pipeline] has no key 'bogus' (known: name" in cli_error(capsys, ["run", "p.toml"])
    recipe.write_text('build = "c.jsonl"\n')
    assert "p.toml: [build] must be a table" in cli_error(capsys, ["run", "p.toml"])
    recipe.write_text('[pipeline]\nmodel = "m"\n')
    assert "p.toml: no steps to run (sections: train, build" in cli_error(capsys, ["run", "p.toml"])
    recipe.write_text("[build]\nquiet = true\n")
    assert "p.toml:1: [build] needs 'corpus'" in cli_error(capsys, ["run", "p.toml"])


def test_sweep_argument_messages(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    index = str(tmp_path / "idx")
    err = parse_error(capsys, ["sweep", "--index", index, "--layers", "1,x"])
    assert "argument --layers: expected comma-separated ints, got '1,x'" in err
    err = parse_error(capsys, ["sweep", "--index", index, "--dims", ","])
    assert "argument --dims: expected at least one value" in err
    err = parse_error(capsys, ["tune", "--index", index, "--transforms", "prefix,rot"])
    assert "argument --transforms: transforms must be prefix, pca or adapter, got 'prefix,rot'" in err
    # checked before the index or the model is opened
    err = cli_error(capsys, ["sweep", "--index", index, "--target", "2"])
    assert "esrag sweep: error: --target must be a retention in (0, 1.5], got 2.0" in err
    assert "--target must be a retention in (0, 1.5], got 0.0" in cli_error(
        capsys, ["tune", "--index", index, "--target", "0"]
    )
    from esrag.cli.sweep import sweep_from_args

    with pytest.raises(CliError, match=r"--target must be a retention in \(0, 1\.5\], got -1"):
        sweep_from_args(argparse.Namespace(target=-1), None, None)


def test_eval_names_the_qrels_and_queries_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    queries = write_jsonl(tmp_path / "queries.jsonl", [{"_id": "q1", "text": "cat"}])
    qrels = tmp_path / "qrels.tsv"
    qrels.write_text("q1\td1\t1\nq2\td1\t1\nq3\td2\t0\n")
    err = cli_error(
        capsys, ["eval", "--index", str(tmp_path / "idx"), "--queries", str(queries), "--qrels", str(qrels)]
    )
    assert (
        f"esrag eval: error: {qrels} (queries from {queries}): 1 judged query id(s) have no query text: 'q2'"
    ) in err


def test_index_and_model_messages(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "notindex"
    folder.mkdir()
    err = cli_error(capsys, ["search", "--index", str(folder), "cat"])
    assert f"{folder / 'manifest.json'}: missing; {folder} is not an esrag index" in err
    corpus = write_jsonl(tmp_path / "c.jsonl", [{"id": "a", "text": "cat"}])
    err = cli_error(
        capsys, ["build", str(corpus), "--index", str(tmp_path / "i"), "--model", "./no/such/model"]
    )
    assert "./no/such/model: no such model folder" in err


def test_train_cli_messages(tmp_path: Path, tiny_model_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pairs = write_jsonl(tmp_path / "p.jsonl", [{"anchor": f"a{i}", "positive": f"b{i}"} for i in range(4)])
    foreign = tmp_path / "out"
    foreign.mkdir()
    (foreign / "x.txt").write_text("keep")
    base = ["train", "--train", str(pairs), "--base", str(tiny_model_dir), "--device", "cpu"]
    err = cli_error(capsys, [*base, "--output", str(foreign)])
    assert f"esrag train: error: {foreign}: output exists and is not an esrag encoder folder" in err
    err = cli_error(
        capsys, [*base, "--output", str(tmp_path / "m"), "--no-resume", "--checkpoint-dir", str(foreign)]
    )
    assert (
        f"{foreign}: checkpoint folder exists and is not an esrag checkpoint folder (it holds 'x.txt')" in err
    )
    assert "esrag train: error: batch_size must be >= 2" in cli_error(
        capsys, [*base, "--output", str(tmp_path / "m"), "--batch-size", "1"]
    )
    assert "lr has an invalid value -1.0" in cli_error(
        capsys, [*base, "--output", str(tmp_path / "m"), "--lr", "-1"]
    )
    assert (foreign / "x.txt").read_text() == "keep" and not (tmp_path / "m").exists()
