"""BEIR folder reader: layout, CRLF qrels, and errors naming file:line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from esrag.data import DataError, doc_text, load_beir, load_qrels


def write_beir(root: Path, *, crlf: bool = True) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    docs = [
        {"_id": "d1", "title": "Cats", "text": "Cats purr.", "metadata": {}},
        {"_id": "d2", "title": "", "text": "Dogs bark."},
        {"_id": 3, "title": "Birds", "text": "Birds sing."},
    ]
    (root / "corpus.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs))
    queries = [
        {"_id": "q1", "text": "what purrs"},
        {"_id": "q2", "text": "who barks"},
        {"_id": "q3", "text": "unjudged"},
    ]
    (root / "queries.jsonl").write_text("".join(json.dumps(q) + "\n" for q in queries))
    (root / "qrels").mkdir(exist_ok=True)
    eol = "\r\n" if crlf else "\n"
    rows = ["query-id\tcorpus-id\tscore", "q1\td1\t1", "q2\td2\t2", "q2\t3\t0"]
    (root / "qrels" / "test.tsv").write_text(eol.join(rows) + eol)
    return root


def test_load_beir(tmp_path: Path) -> None:
    ds = load_beir(write_beir(tmp_path / "b"))
    assert list(ds.corpus) == ["d1", "d2", "3"]
    title, text = ds.corpus["d1"]
    assert (title, text) == ("Cats", "Cats purr.")
    assert ds.doc_texts() == ["Cats Cats purr.", "Dogs bark.", "Birds Birds sing."]
    assert ds.queries == {"q1": "what purrs", "q2": "who barks"}
    assert ds.qrels == {"q1": {"d1": 1}, "q2": {"d2": 2, "3": 0}}
    assert "docs=3" in repr(ds)


def test_doc_text_strips() -> None:
    assert doc_text("", "  body ") == "body"
    assert doc_text("T", "") == "T"


def test_missing_split_names_available(tmp_path: Path) -> None:
    root = write_beir(tmp_path / "b")
    with pytest.raises(
        FileNotFoundError,
        match=r"qrels/train\.tsv: no qrels for split 'train' "
        r"\(available splits: test\)",
    ):
        load_beir(root, "train")
    (root / "qrels" / "test.tsv").unlink()
    (root / "qrels").rmdir()
    with pytest.raises(FileNotFoundError, match="the folder has no qrels/"):
        load_beir(root)
    with pytest.raises(FileNotFoundError, match="not a BEIR folder"):
        load_beir(tmp_path / "nope")


def test_bad_corpus_lines(tmp_path: Path) -> None:
    root = write_beir(tmp_path / "b")
    corpus = root / "corpus.jsonl"
    corpus.write_text('{"_id": "a", "text": "ok"}\n{"_id": "b", "text": \n')
    with pytest.raises(DataError, match=r"corpus\.jsonl:2: invalid JSON at column"):
        load_beir(root)
    corpus.write_text('{"_id": "a", "text": "ok"}\n\n{"_id": "b", "body": "x"}\n')
    with pytest.raises(DataError, match=r"corpus\.jsonl:3: field 'text': missing"):
        load_beir(root)
    corpus.write_bytes(b'{"_id": "a", "text": "ok"}\n{"_id": "b", "text": "\xff"}\n')
    with pytest.raises(DataError, match=r"corpus\.jsonl:2: not valid UTF-8"):
        load_beir(root)
    corpus.write_text("")
    with pytest.raises(DataError, match=r"corpus\.jsonl: the file is empty"):
        load_beir(root)
    corpus.write_text('{"_id": "a", "text": "x"}\n{"_id": "a", "text": "y"}\n')
    with pytest.raises(DataError, match=r"corpus\.jsonl:2: field '_id': duplicate document id"):
        load_beir(root)
    corpus.write_text('["a", "b"]\n')
    with pytest.raises(DataError, match=r"corpus\.jsonl:1: expected a JSON object, got list"):
        load_beir(root)


def test_bad_qrels(tmp_path: Path) -> None:
    path = tmp_path / "q.tsv"
    path.write_text("q1\td1\t1\nq1\td2\n")
    with pytest.raises(DataError, match=r"q\.tsv:2: expected 3 tab-separated columns"):
        load_qrels(path)
    path.write_text("q1\td1\t1\nq1\td2\thigh\n")
    with pytest.raises(DataError, match=r"q\.tsv:2: field 'score': expected an integer"):
        load_qrels(path)
    path.write_text("query-id\tcorpus-id\tscore\n")
    with pytest.raises(DataError, match="no judgments"):
        load_qrels(path)
    path.write_text("q1\t0\td1\t2\n")  # TREC 4-column layout
    assert load_qrels(path) == {"q1": {"d1": 2}}


def test_qrels_query_missing_from_queries(tmp_path: Path) -> None:
    root = write_beir(tmp_path / "b", crlf=False)
    with open(root / "qrels" / "test.tsv", "a") as handle:
        handle.write("q7\td1\t1\n")
    with pytest.raises(DataError, match=r"test\.tsv: 1 judged query ids are not in queries"):
        load_beir(root)


@pytest.mark.data
def test_scifact_counts(data_dir: Path) -> None:
    ds = load_beir(data_dir / "scifact")
    assert (len(ds.corpus), len(ds.queries), sum(map(len, ds.qrels.values()))) == (5183, 300, 339)
    train = load_beir(data_dir / "scifact", "train")
    assert (len(train.queries), sum(map(len, train.qrels.values()))) == (809, 919)
