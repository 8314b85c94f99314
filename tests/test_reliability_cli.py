"""Issue 12, command-line side: user errors are ``esrag CMD: error: ...`` (exit 2, no
traceback), the build summary tells what the index uses, filters match CSV strings, eval
warns about judged documents the index lacks, bad text in a corpus is named by file:line.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from esrag.cli.main import main
from tests.test_cli import make_docs, write_jsonl


@pytest.fixture()
def workspace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("ESRAG_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    write_jsonl(tmp_path / "corpus.jsonl", make_docs())
    return tmp_path


def _build(model: Path, *extra: str, corpus: str = "corpus.jsonl", index: str = "idx") -> int:
    return main(["build", corpus, "--index", index, "--model", str(model), "-q", *extra])


def test_index_naming_a_regular_file(
    workspace: Path, tiny_model_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (workspace / "notes.txt").write_text("mine")
    assert _build(tiny_model_dir, index="notes.txt") == 2
    err = capsys.readouterr().err
    assert "esrag build: error: --index notes.txt: is a file, not an index folder" in err
    assert "Traceback" not in err
    assert main(["search", "--index", "notes.txt", "cat"]) == 2
    assert "esrag search: error: --index notes.txt: is a file, not an index folder" in capsys.readouterr().err
    assert (workspace / "notes.txt").read_text() == "mine"


def test_an_os_error_is_a_user_error(
    workspace: Path, tiny_model_dir: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno

    from esrag.index.fine import FineStore

    def full(*_args: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(FineStore, "write", full)
    assert _build(tiny_model_dir) == 2
    err = capsys.readouterr().err
    assert "esrag build: error: [Errno 28] idx: saving the index failed" in err
    assert "Traceback" not in err and not (workspace / "idx").exists()


def test_coarse_dim_beyond_the_model(
    workspace: Path, tiny_model_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _build(tiny_model_dir, "--coarse", "2:9999") == 2
    err = capsys.readouterr().err
    assert (
        "esrag build: error: --coarse 2:9999: the model has 32 dims per layer; use a dim of at most 32" in err
    )
    assert _build(tiny_model_dir, "--coarse", "7:8") == 2
    assert "--coarse 7:8: the model has layers 1..3" in capsys.readouterr().err
    assert not (workspace / "idx").exists()


def test_summary_reports_the_transform_and_dims_in_use(
    workspace: Path, tiny_model_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # 40 documents cannot fit a 24-dim PCA (it needs 48): the index falls back to prefix
    assert _build(tiny_model_dir, "--coarse", "2:24", "--transform", "pca") == 0
    out = capsys.readouterr().out
    assert "coarse: layer 2, 24 dims, prefix (asked: 24 dims, pca), Flat" in out
    assert _build(tiny_model_dir, "--coarse", "2:8", "--json") == 0
    report = json.loads(capsys.readouterr().out)
    assert report["coarse"] == {"layer": 2, "dim": 8, "transform": "pca"}
    assert _build(tiny_model_dir, "--coarse", "2:32", "--json") == 0  # full width: a rotation is a no-op
    report = json.loads(capsys.readouterr().out)
    assert report["coarse"] == {"layer": 2, "dim": 32, "transform": "prefix"}
    assert report["config"]["transform"] == "pca"


def test_filter_on_a_csv_corpus_matches_its_strings(
    workspace: Path, tiny_model_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = ["id,text,year,flag"] + [
        f"d{i},{d['text']},{2000 + i % 3},{'true' if i % 2 else 'false'}" for i, d in enumerate(make_docs())
    ]
    (workspace / "corpus.csv").write_text("\n".join(rows) + "\n")
    assert _build(tiny_model_dir, corpus="corpus.csv") == 0
    capsys.readouterr()
    assert main(["search", "--index", "idx", "cat", "-k", "40", "--json", "--filter", "year=2001"]) == 0
    hits = json.loads(capsys.readouterr().out)["hits"]
    assert hits and {h["metadata"]["year"] for h in hits} == {"2001"}
    assert len(hits) == len([i for i in range(40) if i % 3 == 1])
    assert (
        main(
            [
                "search",
                "--index",
                "idx",
                "cat",
                "-k",
                "40",
                "--json",
                "--filter",
                "flag=true",
                "--filter",
                "year=2000",
            ]
        )
        == 0
    )
    hits = json.loads(capsys.readouterr().out)["hits"]
    assert {(h["metadata"]["flag"], h["metadata"]["year"]) for h in hits} == {("true", "2000")}


def test_eval_warns_about_judged_documents_missing_from_the_index(
    workspace: Path,
    tiny_model_dir: Path,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    assert _build(tiny_model_dir) == 0
    write_jsonl(workspace / "q.jsonl", [{"_id": "q1", "text": "cat dog"}, {"_id": "q2", "text": "river"}])
    (workspace / "qrels.tsv").write_text(
        "query-id\tcorpus-id\tscore\nq1\td01\t1\nq1\tother-corpus-7\t1\nq2\tgone\t2\n"
    )
    with caplog.at_level(logging.WARNING):
        code = main(
            [
                "eval",
                "--index",
                "idx",
                "--queries",
                "q.jsonl",
                "--qrels",
                "qrels.tsv",
                "--timing-queries",
                "1",
                "--json",
            ]
        )
    assert code == 0
    assert (
        "2 of 3 relevant documents in the qrels are not in the index (e.g. 'gone', 'other-corpus-7')"
        in caplog.text
    )


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (
            r'{"id": "b", "text": "bad \ud800 text"}',
            r"bad\.jsonl:2: field 'text': character 4 is '\\ud800', a lone surrogate",
        ),
        (r'{"id": "\udc01", "text": "fine"}', r"bad\.jsonl:2: field 'id': character 0 is '\\udc01'"),
        (r'{"id": "b", "text": "fine", "tag": "x\udfff"}', r"bad\.jsonl:2: field 'tag': character 1"),
        (
            '{"id": "b", "text": "fine", "score": NaN}',
            r"bad\.jsonl:2: field 'score': nan is not a finite number",
        ),
    ],
)
def test_text_that_cannot_be_written_is_named_by_file_and_line(
    workspace: Path, tiny_model_dir: Path, capsys: pytest.CaptureFixture[str], line: str, message: str
) -> None:
    import re

    (workspace / "bad.jsonl").write_text('{"id": "a", "text": "cat"}\n' + line + "\n")
    assert _build(tiny_model_dir, corpus="bad.jsonl") == 2
    err = capsys.readouterr().err
    assert re.search(message, err), err
    assert "Traceback" not in err and not (workspace / "idx").exists()
