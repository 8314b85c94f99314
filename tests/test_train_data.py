"""Training data: formats, column detection, BEIR and corpus mining, holdout, bad-input errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from esrag.data import DataError
from esrag.train import TrainConfig
from esrag.train.batching import BatchPlan, false_negative_mask
from esrag.train.config import CorpusPairs
from esrag.train.data import Examples, load_source, load_training_data, mine_pairs, split_holdout


def config(*sources: str | Path, **kwargs: object) -> TrainConfig:
    return TrainConfig(train=tuple(str(s) for s in sources) or ("x",), output="unused", **kwargs)  # type: ignore[arg-type]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_pairs_triplets_and_scored_rows(tmp_path: Path) -> None:
    pairs = write_jsonl(
        tmp_path / "p.jsonl", [{"query": "q1", "document": "d1"}, {"query": "q2", "document": "d2"}]
    )
    (ex,) = load_source(str(pairs), config())
    assert (ex.anchors, ex.positives, ex.negatives, ex.scores) == (["q1", "q2"], ["d1", "d2"], None, None)
    triplets = tmp_path / "t.csv"
    triplets.write_text("sent0,sent1,hard_neg\na,b,c\nd,e,f\n")
    (ex,) = load_source(str(triplets), config())
    assert ex.negatives == ["c", "f"]
    scored = tmp_path / "s.tsv"
    scored.write_text("split\tsentence1\tsentence2\tscore\ntrain\ta\tb\t4.5\ntest\tc\td\t1\ntrain\te\tf\t0\n")
    (ex,) = load_source(str(scored), config(where=("split=train",), score_range=(0, 5)))
    assert ex.scored and ex.scores == [4.5, 0.0] and ex.anchors == ["a", "e"]


def test_custom_columns_and_parquet(tmp_path: Path) -> None:
    import datasets

    path = tmp_path / "data.parquet"
    datasets.Dataset.from_dict({"x": ["a", "b"], "y": ["c", "d"], "s": [1.0, 2.0]}).to_parquet(str(path))
    (ex,) = load_source(str(path), config(anchor_column="x", positive_column="y", score_column="s"))
    assert ex.anchors == ["a", "b"] and ex.scores == [1.0, 2.0]
    (ex,) = load_source(str(path), config(anchor_column="x", positive_column="y", kind="pairs"))
    assert ex.scores is None


def test_bad_input_errors_name_file_row_and_column(tmp_path: Path) -> None:
    missing = write_jsonl(tmp_path / "missing.jsonl", [{"anchor": "a", "pos": "b"}])
    with pytest.raises(DataError, match=r"missing\.jsonl.*no positive column.*anchor, pos"):
        load_source(str(missing), config())
    with pytest.raises(DataError, match=r"missing\.jsonl: field 'doc': column not found"):
        load_source(str(missing), config(positive_column="doc"))
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(DataError, match=r"empty\.jsonl: the file is empty"):
        load_source(str(empty), config())
    blank = write_jsonl(
        tmp_path / "blank.jsonl", [{"anchor": "a", "positive": "b"}, {"anchor": "c", "positive": "  "}]
    )
    with pytest.raises(DataError, match=r"blank\.jsonl:2: field 'positive': row 2: empty text"):
        load_source(str(blank), config())
    scored = tmp_path / "range.csv"
    scored.write_text("text1,text2,score\na,b,1\nc,d,7.5\n")
    with pytest.raises(
        DataError,
        match=r"range\.csv:3: field 'score': row 2: score 7\.5 is "
        r"outside the declared range \[0, 5\]",
    ):
        load_source(str(scored), config(score_range=(0, 5)))
    filtered = tmp_path / "filtered.csv"
    filtered.write_text("split,text1,text2\ntrain,a,b\n")
    with pytest.raises(DataError, match=r"filtered\.csv: no rows match split=dev"):
        load_source(str(filtered), config(where=("split=dev",)))
    with pytest.raises(FileNotFoundError, match=r"nowhere\.jsonl: no such data file"):
        load_source(str(tmp_path / "nowhere.jsonl"), config())
    odd = tmp_path / "data.xml"
    odd.write_text("<x/>")
    with pytest.raises(DataError, match=r"data\.xml: unsupported file type '\.xml'"):
        load_source(str(odd), config())


def make_beir(folder: Path) -> Path:
    (folder / "qrels").mkdir(parents=True)
    write_jsonl(
        folder / "corpus.jsonl",
        [
            {"_id": "d1", "title": "Cats", "text": "Cats purr. They sleep a lot."},
            {"_id": "d2", "title": "Dogs", "text": "Dogs bark."},
            {"_id": "d3", "title": "", "text": "No title here. Second sentence."},
        ],
    )
    write_jsonl(
        folder / "queries.jsonl",
        [
            {"_id": "q1", "text": "do cats purr"},
            {"_id": "q2", "text": "do dogs bark"},
            {"_id": "q3", "text": "test query"},
        ],
    )
    (folder / "qrels" / "train.tsv").write_text(
        "query-id\tcorpus-id\tscore\r\nq1\td1\t1\r\nq2\td2\t1\r\nq2\td3\t0\r\n"
    )
    (folder / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq3\td3\t1\n")
    return folder


def test_beir_train_qrels_and_corpus_pairs(tmp_path: Path) -> None:
    folder = make_beir(tmp_path / "beir")
    found = load_source(str(folder), config(corpus_pairs="title"))
    qrels, titles = found
    assert qrels.anchors == ["do cats purr", "do dogs bark"]  # grade-0 judgment dropped
    assert qrels.positives == ["Cats Cats purr. They sleep a lot.", "Dogs Dogs bark."]
    assert "test query" not in qrels.anchors
    assert titles.anchors == ["Cats", "Dogs"]  # the untitled document is skipped


def test_corpus_mining_sentence_pairs(tmp_path: Path) -> None:
    docs = [("T", "First one. Second one! Third one?"), ("U", "Only one sentence.")]
    ex = mine_pairs(docs, CorpusPairs.SENTENCE, seed=0, source="c")
    assert len(ex) == 1
    sentence, rest = ex.anchors[0], ex.positives[0]
    assert sentence in {"First one.", "Second one!", "Third one?"}
    assert rest.startswith("T ") and sentence not in rest
    with pytest.raises(DataError, match=r"c: no sentence pairs could be mined from 1 documents"):
        mine_pairs(docs[1:], CorpusPairs.SENTENCE, seed=0, source="c")
    corpus = make_beir(tmp_path / "b") / "corpus.jsonl"
    (ex,) = load_source(str(corpus), config(kind="corpus"))
    assert ex.anchors == ["Cats", "Dogs"]


def test_holdout_keeps_anchors_apart_and_sampling(tmp_path: Path) -> None:
    rows = [{"anchor": f"a{i % 10}", "positive": f"p{i}"} for i in range(40)]
    path = write_jsonl(tmp_path / "rows.jsonl", rows)
    train, held = load_training_data(config(path, eval_fraction=0.2))
    assert len(train[0]) + len(held[0]) == 40
    assert not set(train[0].anchors) & set(held[0].anchors)
    assert len(set(held[0].anchors)) == 2
    (small,) = load_source(str(path), config(max_examples=5))
    assert len(small) == 5
    ex = Examples("s", ["a", "b", "c"], ["x", "y", "z"])
    a, b = split_holdout(ex, 0.34, seed=1)
    assert sorted(a.anchors + b.anchors) == ["a", "b", "c"]


def test_batch_plan_is_deterministic_and_homogeneous() -> None:
    pairs = Examples("p", [f"a{i}" for i in range(10)], [f"p{i}" for i in range(10)])
    scored = Examples(
        "s", [f"s{i}" for i in range(5)], [f"t{i}" for i in range(5)], scores=[float(i) for i in range(5)]
    )
    plan = BatchPlan([pairs, scored], batch_size=4, seed=3)
    assert plan.per_epoch == 3 + 1  # 4+4+2 pairs, 4 scored (a last batch of 1 is dropped)
    again = BatchPlan([pairs, scored], batch_size=4, seed=3)
    assert plan.epoch(0) == again.epoch(0) and plan.epoch(0) != plan.epoch(1)
    for index in range(2 * plan.per_epoch):
        batch = plan.micro_batch(index)
        assert (batch.scores is not None) == (batch.source == 1)
    mask = false_negative_mask(["q", "q", "r"], ["d1", "d2", "d1"])
    assert mask.tolist() == [[False, True, True], [True, False, False], [True, False, False]]


def test_config_validation() -> None:
    with pytest.raises(ValueError, match="batch_size must be >= 2"):
        config(batch_size=1)
    with pytest.raises(ValueError, match="kind must be one of"):
        config(kind="xml")
    with pytest.raises(ValueError, match="score_range must be"):
        config(score_range=(5, 0))
    with pytest.raises(ValueError, match="where entries must look like 'column=value'"):
        config(where=("split",))
    with pytest.raises(TypeError, match=r"layers\[0\] must be an int"):
        config(layers=("2",))
    with pytest.raises(ValueError, match="train must name at least one data source"):
        TrainConfig(train=(), output="o")
    cfg = config(kind="scored", layers=[1, 2], score_range=[0, 5])
    assert TrainConfig.from_json(json.loads(json.dumps(cfg.to_json()))) == cfg
    assert (
        cfg.differences(config(kind="scored", layers=[1, 2], score_range=[0, 5], show_progress=False)) == []
    )
    assert cfg.differences(config(kind="scored", layers=[1], score_range=[0, 5])) == ["layers"]


def test_error_lines_skip_blank_lines_and_span_quoted_fields(tmp_path: Path) -> None:
    blank = tmp_path / "gap.jsonl"
    blank.write_text('{"anchor": "a", "positive": "b"}\n\n{"anchor": "c", "positive": " "}\n')
    with pytest.raises(DataError, match=r"gap\.jsonl:3: field 'positive': row 2: empty text"):
        load_source(str(blank), config())
    quoted = tmp_path / "quoted.csv"
    quoted.write_text('anchor,positive\na,"two\nlines"\n\nc,\n')
    with pytest.raises(DataError, match=r"quoted\.csv:5: field 'positive': row 2: empty text"):
        load_source(str(quoted), config())
    quoted.write_text('anchor,positive\na,"two\nlines"\nc,d\n')
    (ex,) = load_source(str(quoted), config())
    assert ex.positives == ["two\nlines", "d"]
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"anchor": "a", "positive": "b"}\n\n{"anchor": "c", "positive": \n')
    with pytest.raises(DataError, match=r"bad\.jsonl:3: invalid JSON at column"):
        load_source(str(bad), config())


def test_json_array_errors_name_the_element(tmp_path: Path) -> None:
    array = tmp_path / "rows.json"
    rows = [{"anchor": "a", "positive": "b"}, {"anchor": "c", "positive": ""}]
    array.write_text(json.dumps(rows, indent=2))
    with pytest.raises(DataError, match=r"rows\.json: field 'positive': element \[1\]: empty text"):
        load_source(str(array), config())
    rows[1]["positive"] = "d"
    array.write_text(json.dumps(rows, indent=2))
    (ex,) = load_source(str(array), config())
    assert ex.positives == ["b", "d"]
    array.write_text('[\n  {"anchor": "a",\n   "positive": }\n]\n')
    with pytest.raises(DataError, match=r"rows\.json:3: invalid JSON at column 16"):
        load_source(str(array), config())
    lines = tmp_path / "lines.json"  # JSON Lines under a .json name
    lines.write_text('{"anchor": "a", "positive": "b"}\n{"anchor": "c", "positive": "d"}\n{"anchor": 1\n')
    with pytest.raises(DataError, match=r"lines\.json:3: invalid JSON"):
        load_source(str(lines), config())
    lines.write_text('{"anchor": "a", "positive": "b"}\n\n{"anchor": "c", "positive": 4}\n')
    with pytest.raises(DataError, match=r"lines\.json:3: field 'positive': row 2: expected text, got int 4"):
        load_source(str(lines), config())


def test_csv_cells_are_text_and_scores_are_parsed(tmp_path: Path) -> None:
    path = tmp_path / "s.csv"
    path.write_text("sentence1,sentence2,score\n1,2,4\n3,4,2.5\n")
    (ex,) = load_source(str(path), config())
    assert ex.anchors == ["1", "3"] and ex.scores == [4.0, 2.5]
    path.write_text("sentence1,sentence2,score\na,b,1\nc,d,nan\n")
    with pytest.raises(DataError, match=r"s\.csv:3: field 'score': row 2: expected a finite number, got nan"):
        load_source(str(path), config(score_column="score"))
