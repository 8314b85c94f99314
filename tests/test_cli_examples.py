"""The shipped pipelines and examples run (with the tiny model, in-process for speed)."""

from __future__ import annotations

import json
import runpy
import sys
from pathlib import Path

import pytest

from esrag.cli.main import main

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"


def test_quickstart_data_is_consistent() -> None:
    from esrag.data.beir import load_qrels, load_queries
    from esrag.data.corpus import read_corpus

    docs = {d.id: d for d in read_corpus(EXAMPLES / "data" / "quickstart.jsonl")}
    assert 50 <= len(docs) <= 200
    queries = load_queries(EXAMPLES / "data" / "quickstart-queries.jsonl")
    qrels = load_qrels(EXAMPLES / "data" / "quickstart-qrels.tsv")
    assert set(qrels) == set(queries)
    assert all(doc in docs for judged in qrels.values() for doc in judged)


def test_quickstart_pipeline_with_tiny_model(
    tiny_model_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("ESRAG_CACHE", str(tmp_path / "cache"))
    code = main(
        [
            "run",
            str(ROOT / "pipelines" / "quickstart.toml"),
            "--set",
            f"pipeline.model={json.dumps(str(tiny_model_dir))}",
            "--set",
            f"pipeline.index={json.dumps(str(tmp_path / 'idx'))}",
            "--set",
            f"sweep.output={json.dumps(str(tmp_path / 'sweep'))}",
            "--set",
            "sweep.layers=[1, 3]",
            "--set",
            "sweep.dims=[8, 16]",
            "--set",
            "build.coarse='3:16'",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0, out
    assert "built" in out and "query: how is espresso made" in out
    assert "| ndcg@10 |" in out and "Reference (fine-only, 3:32)" in out
    assert (tmp_path / "sweep" / "sweep.png").is_file()


def test_scifact_pipeline_plan(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("ESRAG_DATA", "/data")
    assert main(["run", str(ROOT / "pipelines" / "scifact.toml"), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "esrag build /data/scifact" in out and "--beir /data/scifact" in out
    monkeypatch.delenv("ESRAG_DATA")
    assert main(["run", str(ROOT / "pipelines" / "scifact.toml"), "--dry-run"]) == 2
    assert "environment variable ESRAG_DATA is not set" in capsys.readouterr().err


@pytest.mark.parametrize("script", ["quickstart.py", "langchain_rag.py", "evaluate_cascade.py"])
def test_example_runs(
    script: str,
    tiny_model_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    argv = [script, "--model", str(tiny_model_dir)]
    if script == "quickstart.py":
        argv += ["--index", str(tmp_path / "idx")]
    monkeypatch.setattr(sys, "argv", argv)
    runpy.run_path(str(EXAMPLES / script), run_name="__main__")
    out = capsys.readouterr().out
    expected = {
        "quickstart.py": "indexed 100 documents",
        "langchain_rag.py": "(fake LLM)",
        "evaluate_cascade.py": "| ndcg@10 |",
    }[script]
    assert expected in out
