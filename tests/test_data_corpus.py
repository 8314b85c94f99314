"""Corpus readers: JSONL/CSV/TSV/Parquet/folder/BEIR, chunking, errors naming file:line:field."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from esrag.data import DataError
from esrag.data.chunking import chunk_text
from esrag.data.corpus import CorpusSpec, detect_format, read_corpus


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def test_jsonl_fields_and_metadata(tmp_path: Path) -> None:
    path = write_jsonl(
        tmp_path / "c.jsonl",
        [
            {"id": 1, "title": "T", "text": "body", "lang": "en", "tags": ["x"], "metadata": {"year": 2020}},
            {"id": "b", "text": "two"},
        ],
    )
    docs = list(read_corpus(path))
    assert [d.id for d in docs] == ["1", "b"]
    assert docs[0].text == "T body"
    assert docs[0].metadata == {"year": 2020, "lang": "en"}  # lists dropped
    assert docs[0].source.endswith("c.jsonl:1")
    assert docs[0].content_hash != docs[1].content_hash
    spec = CorpusSpec(id_field="lang", text_field="title", title_field=None, metadata_fields=("id",))
    other = write_jsonl(tmp_path / "d.jsonl", [{"id": 1, "title": "T", "lang": "en"}])
    only = list(read_corpus(other, spec))
    assert (only[0].id, only[0].text, only[0].metadata) == ("en", "T", {"id": 1})


def test_jsonl_errors(tmp_path: Path) -> None:
    path = tmp_path / "c.jsonl"
    path.write_text('{"id": "a", "text": "x"}\n{"id": "b", "text": "y"\n')
    with pytest.raises(DataError, match=r"c\.jsonl:2: invalid JSON"):
        list(read_corpus(path))
    path.write_text('{"id": "a", "text": "x"}\n{"id": "b", "body": "y"}\n')
    with pytest.raises(
        DataError,
        match=r"c\.jsonl:2: field 'text': missing \(the record has: "
        r"body, id\); choose the text field with --text-field",
    ):
        list(read_corpus(path))
    path.write_text('{"text": "x"}\n')
    with pytest.raises(DataError, match=r"c\.jsonl:1: field 'id': missing"):
        list(read_corpus(path))
    path.write_text('{"id": "a", "text": 5}\n')
    with pytest.raises(DataError, match=r"c\.jsonl:1: field 'text': expected a string, got int"):
        list(read_corpus(path))
    path.write_bytes(b'{"id": "a", "text": "x"}\n\n{"id": "b", "text": "caf\xe9"}\n')
    with pytest.raises(DataError, match=r"c\.jsonl:3: not valid UTF-8"):
        list(read_corpus(path))
    path.write_text("\n\n")
    with pytest.raises(DataError, match=r"c\.jsonl: the file is empty"):
        list(read_corpus(path))
    path.write_text('{"id": "a", "text": "x"}\n{"id": "a", "text": "y"}\n')
    with pytest.raises(
        DataError,
        match=r"c\.jsonl:2: field 'id': duplicate id 'a' "
        r"\(first at .*c\.jsonl:1\)",
    ):
        list(read_corpus(path))
    path.write_text('{"id": "a", "text": ""}\n')
    with pytest.raises(DataError, match="the corpus has no documents"):
        list(read_corpus(path))
    spec = CorpusSpec(metadata_fields=("lang",))
    path.write_text('{"id": "a", "text": "x"}\n')
    with pytest.raises(DataError, match=r"c\.jsonl:1: field 'lang': missing metadata field"):
        list(read_corpus(path, spec))


def test_csv_and_tsv(tmp_path: Path) -> None:
    path = tmp_path / "c.csv"
    path.write_text('id,text,topic\na,"hello, world",greet\nb,"multi\nline",misc\n')
    docs = list(read_corpus(path))
    assert [(d.id, d.text, d.metadata) for d in docs] == [
        ("a", "hello, world", {"topic": "greet"}),
        ("b", "multi\nline", {"topic": "misc"}),
    ]
    path.write_text("id,text\na,x\nb,y,z\n")
    with pytest.raises(DataError, match=r"c\.csv:3: expected 2 columns like the header, got 3"):
        list(read_corpus(path))
    path.write_text("")
    with pytest.raises(DataError, match=r"c\.csv: the file is empty \(no header row\)"):
        list(read_corpus(path))
    path.write_bytes(b"id,text\na,x\nb,\xff\xfe\n")
    with pytest.raises(DataError, match=r"c\.csv:3: not valid UTF-8"):
        list(read_corpus(path))
    tsv = tmp_path / "c.tsv"
    tsv.write_text("doc\tbody\nx1\tsome text\n")
    docs = list(read_corpus(tsv, CorpusSpec(id_field="doc", text_field="body")))
    assert (docs[0].id, docs[0].text) == ("x1", "some text")


def test_parquet(tmp_path: Path) -> None:
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    path = tmp_path / "c.parquet"
    pq.write_table(pa.table({"id": ["a", "b"], "text": ["x", None], "n": [1, 2]}), path)
    with pytest.raises(DataError, match=r"c\.parquet:2: field 'text': missing"):
        list(read_corpus(path))
    pq.write_table(pa.table({"id": ["a"], "body": ["x"]}), path)
    with pytest.raises(DataError, match=r"c\.parquet: field 'text': no such column"):
        list(read_corpus(path))
    pq.write_table(pa.table({"id": ["a"], "text": ["x"], "n": [3]}), path)
    assert [(d.id, d.metadata) for d in read_corpus(path)] == [("a", {"n": 3})]
    (tmp_path / "bad.parquet").write_bytes(b"nope")
    with pytest.raises(DataError, match=r"bad\.parquet: not a readable Parquet file"):
        list(read_corpus(tmp_path / "bad.parquet"))


def test_folder_of_files_chunked(tmp_path: Path) -> None:
    root = tmp_path / "notes"
    (root / "sub").mkdir(parents=True)
    (root / "a.md").write_text("# Title\n\n" + " ".join(f"w{i}" for i in range(40)))
    (root / "sub" / "b.txt").write_text("short note")
    (root / "empty.txt").write_text("  \n")
    (root / "skip.py").write_text("print()")
    (root / ".hidden").mkdir()
    (root / ".hidden" / "h.txt").write_text("hidden")
    docs = list(read_corpus(root, CorpusSpec(chunk_size=60, chunk_overlap=10)))
    ids = [d.id for d in docs]
    assert ids[-1] == "sub/b.txt#0" and ids[0] == "a.md#0" and len(ids) > 3
    assert all(len(d.text) <= 60 for d in docs)
    assert docs[0].metadata == {"source": "a.md", "chunk": 0}
    (root / "bad.txt").write_bytes(b"ok\nstill ok\n\xc3\x28 broken\n")
    with pytest.raises(DataError, match=r"bad\.txt:3: not valid UTF-8"):
        list(read_corpus(root))
    empty = tmp_path / "none"
    empty.mkdir()
    with pytest.raises(DataError, match=r"none: no \.txt/\.md files in the folder"):
        list(read_corpus(empty))


def test_beir_folder_and_detection(tmp_path: Path) -> None:
    root = tmp_path / "beir"
    root.mkdir()
    write_jsonl(root / "corpus.jsonl", [{"_id": "d1", "title": "T", "text": "x", "metadata": {"k": "v"}}])
    assert detect_format(root) == "beir"
    docs = list(read_corpus(root))
    assert (docs[0].id, docs[0].text, docs[0].metadata) == ("d1", "T x", {"k": "v"})
    with pytest.raises(FileNotFoundError, match="no such file or folder"):
        detect_format(tmp_path / "missing.jsonl")
    (tmp_path / "x.docx").write_text("")
    with pytest.raises(ValueError, match=r"unknown corpus format '\.docx'"):
        detect_format(tmp_path / "x.docx")


def test_chunk_text() -> None:
    text = " ".join(f"w{i}" for i in range(30))
    chunks = chunk_text(text, 20, 8)
    assert chunks[0] == "w0 w1 w2 w3 w4 w5 w6"
    assert chunks[1].startswith("w4") and chunks[-1].endswith("w29")
    assert all(len(c) <= 20 for c in chunks)
    assert chunk_text("   ", 10, 2) == []
    assert chunk_text("abcdefghijkl xy", 5, 0) == ["abcdefghijkl", "xy"]
    with pytest.raises(ValueError, match=r"chunk overlap must be an int in 0\.\.9"):
        chunk_text("x", 10, 10)
    with pytest.raises(ValueError, match="chunk size must be a positive int"):
        chunk_text("x", 0, 0)
