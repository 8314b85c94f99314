"""The esrag command line end to end on a tiny corpus with the tiny random BERT."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from esrag.cli.main import main

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
    "layer",
    "sentence",
]


def make_docs(n: int = 40) -> list[dict]:
    docs = []
    for i in range(n):
        words = [WORDS[(i * 7 + j * 3) % len(WORDS)] for j in range(6 + i % 5)]
        docs.append(
            {
                "id": f"d{i:02d}",
                "title": WORDS[i % len(WORDS)],
                "text": " ".join(words),
                "group": "even" if i % 2 == 0 else "odd",
            }
        )
    return docs


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


@pytest.fixture()
def workspace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("ESRAG_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    docs = make_docs()
    write_jsonl(tmp_path / "corpus.jsonl", docs)
    write_jsonl(
        tmp_path / "queries.jsonl", [{"_id": f"q{i}", "text": docs[i]["text"][:20]} for i in range(0, 40, 4)]
    )
    (tmp_path / "qrels.tsv").write_text(
        "query-id\tcorpus-id\tscore\r\n" + "".join(f"q{i}\td{i:02d}\t1\r\n" for i in range(0, 40, 4))
    )
    return tmp_path


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    return subprocess.run(
        [sys.executable, "-m", "esrag.cli.main", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def folder_digest(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def test_workflow(workspace: Path, tiny_model_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """build → search → eval → sweep → tune → incremental rebuild.

    build, eval and the rebuilds run in subprocesses (exit codes, pure-JSON stdout); the
    others in-process, because each subprocess pays ~5 s of torch/transformers imports.
    """
    model = str(tiny_model_dir)
    out = run_cli(
        "build",
        "corpus.jsonl",
        "--index",
        "indexes/t",
        "--model",
        model,
        "--coarse",
        "2:8",
        "--shortlist",
        "20",
        "--json",
        cwd=workspace,
    )
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert (report["docs"], report["added"], report["encoded"]) == (40, 40, 40)

    # the model is found again from the manifest: no --model needed
    assert (
        main(["search", "--index", "indexes/t", "cat dog", "-k", "3", "--filter", "group=even", "--json"])
        == 0
    )
    hits = json.loads(capsys.readouterr().out)["hits"]
    assert len(hits) == 3 and all(h["metadata"]["group"] == "even" for h in hits)
    assert main(["search", "--index", "indexes/t", "cat", "bird", "-k", "2"]) == 0
    text = capsys.readouterr().out
    assert "query: cat" in text and "query: bird" in text and " 2. " in text

    out = run_cli(
        "eval",
        "--index",
        "indexes/t",
        "--queries",
        "queries.jsonl",
        "--qrels",
        "qrels.tsv",
        "--json",
        cwd=workspace,
    )
    assert out.returncode == 0, out.stderr
    ev = json.loads(out.stdout)
    for stage in ("cascade", "fine"):
        for key in (
            "ndcg@10",
            "recall@10",
            "recall@100",
            "mrr@10",
            "latency_ms_p50",
            "latency_ms_p95",
            "settings",
        ):
            assert key in ev[stage], (stage, key)
    assert ev["cascade"]["settings"]["shortlist"] == 20
    assert ev["fine"]["settings"]["mode"] == "fine"
    assert ev["fine"]["recall@100"] == 1.0  # 40 docs: the fine top-100 holds everything

    assert (
        main(
            [
                "sweep",
                "--index",
                "indexes/t",
                "--layers",
                "1,3",
                "--dims",
                "8,32",
                "--transforms",
                "prefix,pca",
                "--shortlists",
                "10,40",
                "--sample-queries",
                "20",
                "--timing-queries",
                "3",
                "--output",
                "sw",
                "-q",
            ]
        )
        == 0
    )
    assert "Reference (fine-only, 3:32): overlap@10" in capsys.readouterr().out
    for name in ("sweep.json", "sweep.md", "sweep.png"):
        assert (workspace / "sw" / name).stat().st_size > 0
    data = json.loads((workspace / "sw" / "sweep.json").read_text())
    assert data["reference"]["label_free"] is True
    # 32-dim pca needs 64 docs to fit: skipped, not mislabelled
    assert len(data["points"]) == 2 * 2 * 2 * 2 - 2 * 2
    assert len(data["settings"]["skipped"]) == 2

    # (the tiny random BERT ties many documents exactly, so only plumbing is checked here;
    # retention itself is tested on synthetic vectors in test_eval_sweep.py)
    assert (
        main(
            [
                "tune",
                "--index",
                "indexes/t",
                "--target",
                "0.05",
                "--layers",
                "3",
                "--dims",
                "24",
                "--transforms",
                "prefix",
                "--shortlists",
                "30",
                "--sample-queries",
                "10",
                "--timing-queries",
                "2",
                "--json",
                "-q",
            ]
        )
        == 0
    )
    assert json.loads(capsys.readouterr().out)["applied"] is True
    manifest = json.loads((workspace / "indexes/t/manifest.json").read_text())
    assert manifest["config"]["coarse_layer"] == 3 and manifest["config"]["shortlist"] == 30
    assert manifest["config"]["coarse_dim"] == 24 and manifest["config"]["transform"] == "prefix"

    # incremental: one changed, one deleted, one new document
    docs = make_docs()
    docs[5]["text"] = "protein drug cancer virus"
    del docs[7]
    docs.append({"id": "new", "text": "river city music", "group": "odd"})
    write_jsonl(workspace / "corpus.jsonl", docs)
    out = run_cli("build", "corpus.jsonl", "--index", "indexes/t", "--json", cwd=workspace)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert (
        report["added"],
        report["updated"],
        report["deleted"],
        report["unchanged"],
        report["encoded"],
        report["docs"],
    ) == (1, 1, 1, 38, 2, 40)
    assert report["config"]["coarse_layer"] == 3  # the tuned setting is kept
    assert main(["build", "corpus.jsonl", "--index", "indexes/t", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["action"] == "up to date"
    assert main(["search", "--index", "indexes/t", "x", "-k", "40", "--json"]) == 0
    ids = {h["id"] for h in json.loads(capsys.readouterr().out)["hits"]}
    assert "new" in ids and "d07" not in ids and len(ids) == 40


def test_help_everywhere() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "esrag.cli.main", "--help"], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0 and "build" in out.stdout and "run" in out.stdout
    for command in ("build", "search", "eval", "sweep", "tune", "run", "train"):
        with pytest.raises(SystemExit) as exc:
            main([command, "--help"])
        assert exc.value.code == 0


def test_train_cli_args_import_no_torch() -> None:
    code = (
        "import sys\n"
        "import esrag.train.cli_args\n"
        "import esrag.train\n"
        "heavy = sorted(m for m in ('torch', 'transformers', 'datasets') if m in sys.modules)\n"
        "print('HEAVY:' + ','.join(heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "HEAVY:"


def test_train_help_is_thin_and_lists_the_options() -> None:
    code = (
        "import sys\n"
        "from esrag.cli.main import main\n"
        "try:\n"
        "    main(['train', '--help'])\n"
        "except SystemExit as exc:\n"
        "    assert exc.code == 0\n"
        "print('TORCH' if 'torch' in sys.modules else 'NO-TORCH')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "--train" in out.stdout and "--checkpoint-dir" in out.stdout
    assert out.stdout.strip().endswith("NO-TORCH")


def test_train_bad_input(workspace: Path, tiny_model_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    common = ["--output", "models/t", "--base", str(tiny_model_dir), "--device", "cpu"]
    assert main(["train", "--train", "missing.jsonl", *common]) == 2
    err = capsys.readouterr().err
    assert "esrag train: error: missing.jsonl: no such data file" in err
    beir = workspace / "beir"
    (beir / "qrels").mkdir(parents=True)
    write_jsonl(beir / "corpus.jsonl", [{"_id": "d1", "text": "cat"}])
    write_jsonl(beir / "queries.jsonl", [{"_id": "q1", "text": "cat"}])
    (beir / "qrels" / "test.tsv").write_text("q1\td1\t1\n")
    assert main(["train", "--train", "beir", *common]) == 2
    err = capsys.readouterr().err
    assert "esrag train: error: " in err
    assert (
        f"{Path('beir') / 'qrels' / 'train.tsv'}: no qrels for split 'train' (available splits: test)" in err
    )
    (workspace / "plain").mkdir()
    assert main(["train", "--train", "plain", *common]) == 2
    assert "plain: a folder is only accepted as a BEIR dataset" in capsys.readouterr().err
    assert not (workspace / "models").exists()


@pytest.fixture()
def built(workspace: Path, tiny_model_dir: Path) -> Path:
    assert (
        main(
            [
                "build",
                "corpus.jsonl",
                "--index",
                "idx",
                "--model",
                str(tiny_model_dir),
                "--coarse",
                "1:8",
                "-q",
            ]
        )
        == 0
    )
    return workspace / "idx"


BAD_CORPORA = [
    (b'{"id": "a", "text": "cat"}\n{"id": "b", "text": \n', r"bad\.jsonl:2: invalid JSON"),
    (b'{"id": "a", "text": "cat"}\n{"id": "b", "body": "dog"}\n', r"bad\.jsonl:2: field 'text': missing"),
    (b"", r"bad\.jsonl: the file is empty"),
    (b'{"id": "a", "text": "cat"}\n{"id": "b", "text": "caf\xe9"}\n', r"bad\.jsonl:2: not valid UTF-8"),
]


@pytest.mark.parametrize(("content", "message"), BAD_CORPORA)
def test_malformed_corpus_leaves_index_intact(
    built: Path,
    tiny_model_dir: Path,
    content: bytes,
    message: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    import re

    before = folder_digest(built)
    (built.parent / "bad.jsonl").write_bytes(content)
    code = main(["build", "bad.jsonl", "--index", "idx"])
    assert code == 2
    assert re.search(message, capsys.readouterr().err)
    assert folder_digest(built) == before
    assert main(["search", "--index", "idx", "cat", "-k", "2", "--json"]) == 0


def test_unknown_index_and_bad_labels(built: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["search", "--index", "nope", "cat"]) == 2
    assert "nope: no such index folder" in capsys.readouterr().err
    beir = built.parent / "beir"
    beir.mkdir()
    write_jsonl(beir / "corpus.jsonl", [{"_id": "x", "text": "cat"}])
    write_jsonl(beir / "queries.jsonl", [{"_id": "q", "text": "cat"}])
    assert main(["eval", "--index", "idx", "--beir", str(beir)]) == 2
    assert "qrels/test.tsv: no qrels for split 'test'" in capsys.readouterr().err
    (built.parent / "q.tsv").write_text("q0\td00\t1\nq1\td01\n")
    assert main(["eval", "--index", "idx", "--queries", "queries.jsonl", "--qrels", "q.tsv"]) == 2
    assert "q.tsv:2: expected 3 tab-separated columns" in capsys.readouterr().err
    assert main(["eval", "--index", "idx", "--queries", "queries.jsonl"]) == 2
    assert "give --queries FILE and --qrels FILE" in capsys.readouterr().err
    assert main(["search", "--index", "idx", "cat", "--filter", "nokey"]) == 2
    assert "expected KEY=VALUE" in capsys.readouterr().err


def test_build_refuses_foreign_folder_and_fine_change(
    built: Path, tiny_model_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    other = built.parent / "other"
    other.mkdir()
    (other / "keep.txt").write_text("mine")
    assert main(["build", "corpus.jsonl", "--index", "other"]) == 2
    assert "exists and is not an esrag index" in capsys.readouterr().err
    assert main(["build", "corpus.jsonl", "--index", "idx", "--fine", "2:16"]) == 2
    assert "pass --rebuild" in capsys.readouterr().err


def test_pipeline_recipe(workspace: Path, tiny_model_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    recipe = workspace / "p.toml"
    recipe.write_text(f"""
[pipeline]
model = "{tiny_model_dir}"
index = "indexes/p"

[build]
corpus = "corpus.jsonl"
coarse = "2:8"
shortlist = 20
quiet = true

[search]
queries = ["cat dog"]
k = 2

[eval]
queries = "queries.jsonl"
qrels = "qrels.tsv"
timing_queries = 2
""")
    assert main(["run", str(recipe)]) == 0
    out = capsys.readouterr().out
    assert "built" in out and "query: cat dog" in out and "| ndcg@10 |" in out
    recipe.write_text(recipe.read_text() + "\nbogus = 1\n")
    assert main(["run", str(recipe)]) == 2
    assert f"{recipe}:21: [eval] has no option 'bogus'" in capsys.readouterr().err
    recipe.write_text('[build]\ncorpus = "${ESRAG_NOT_SET_X}/c.jsonl"\n')
    assert main(["run", str(recipe)]) == 2
    assert "environment variable ESRAG_NOT_SET_X is not set" in capsys.readouterr().err
    recipe.write_text("[build\n")
    assert main(["run", str(recipe)]) == 2
    assert f"{recipe}:1:7: invalid TOML: Expected ']' at the end of a table declaration" in (
        capsys.readouterr().err
    )
    recipe.write_text('[pipeline]\nmodel = "m"\nquiet = = true\n')
    assert main(["run", str(recipe)]) == 2
    assert f"{recipe}:3:9: invalid TOML: Invalid value\n" in capsys.readouterr().err


def test_build_with_embedding_cache_matches_plain_build(
    workspace: Path, tiny_model_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    common = ["--model", str(tiny_model_dir), "--coarse", "3:16", "--transform", "prefix", "-q"]
    assert main(["build", "corpus.jsonl", "--index", "plain", *common]) == 0
    assert main(["build", "corpus.jsonl", "--index", "cached", "--cache-embeddings", *common]) == 0
    assert any((workspace / "cache").iterdir())
    capsys.readouterr()
    results = []
    for name in ("plain", "cached"):
        assert main(["search", "--index", name, "protein drug", "-k", "5", "--json"]) == 0
        results.append(json.loads(capsys.readouterr().out)["hits"])
    assert [h["score"] for h in results[0]] == pytest.approx([h["score"] for h in results[1]], abs=1e-4)


def test_pipeline_train_then_build(
    workspace: Path, tiny_model_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_jsonl(
        workspace / "pairs.jsonl",
        [{"anchor": f"cat dog {w}", "positive": f"dog cat bird {w}"} for w in WORDS[:12]],
    )
    recipe = workspace / "t.toml"
    recipe.write_text(f"""
[pipeline]
index = "indexes/trained"

[train]
train = ["pairs.jsonl"]
base = "{tiny_model_dir}"
output = "models/t"
max_steps = 1
batch_size = 4
compress_dim = 8
prefix_dims = [8]

[build]
corpus = "corpus.jsonl"
coarse = "2:8"
quiet = true
""")
    assert main(["run", str(recipe)]) == 0, capsys.readouterr().err
    manifest = json.loads((workspace / "indexes/trained/manifest.json").read_text())
    assert manifest["model_name"] == str((workspace / "models/t").resolve())


@pytest.mark.data
def test_scifact_eval_matches_published(
    data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Fine-only nDCG@10 of the default model on SciFact test = 0.6451 (published).

    Uses the on-disk embedding cache ($ESRAG_CACHE, ~5 minutes to fill on 2 cores once).
    """
    index = str(tmp_path / "scifact")
    assert (
        main(
            [
                "build",
                str(data_dir / "scifact"),
                "--index",
                index,
                "--coarse",
                "6:64",
                "--transform",
                "pca",
                "--cache-embeddings",
                "-q",
            ]
        )
        == 0
    )
    capsys.readouterr()
    assert (
        main(
            [
                "eval",
                "--index",
                index,
                "--beir",
                str(data_dir / "scifact"),
                "--timing-queries",
                "20",
                "--json",
            ]
        )
        == 0
    )
    ev = json.loads(capsys.readouterr().out)
    assert ev["fine"]["ndcg@10"] == pytest.approx(0.645, abs=0.005)
    assert ev["cascade"]["ndcg@10"] >= 0.97 * ev["fine"]["ndcg@10"]


def test_folder_corpus_chunked_and_incremental(
    workspace: Path, tiny_model_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    notes = workspace / "notes"
    notes.mkdir()
    (notes / "a.md").write_text("# cats\n\n" + " ".join(WORDS * 3))
    (notes / "b.txt").write_text("river city music")
    args = [
        "build",
        "notes",
        "--index",
        "n",
        "--model",
        str(tiny_model_dir),
        "--chunk-size",
        "60",
        "--chunk-overlap",
        "10",
        "--coarse",
        "3:4",
        "--json",
        "-q",
    ]
    assert main(args) == 0
    first = json.loads(capsys.readouterr().out)
    assert first["docs"] > 5
    (notes / "b.txt").write_text("river city music and paper")
    assert main(args) == 0
    second = json.loads(capsys.readouterr().out)
    assert (second["updated"], second["added"], second["deleted"]) == (1, 0, 0)
    assert second["unchanged"] == first["docs"] - 1
    assert main(["search", "--index", "n", "paper", "-k", "50", "--json", "--filter", "source=b.txt"]) == 0
    hits = json.loads(capsys.readouterr().out)["hits"]
    assert [h["id"] for h in hits] == ["b.txt#0"]
    assert hits[0]["text"] == "river city music and paper"


@pytest.mark.parametrize("cache", [False, True])
def test_changing_coarse_settings_reconfigures(
    built: Path, cache: bool, capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    extra = ["--cache-embeddings"] if cache else []
    assert (
        main(
            [
                "build",
                "corpus.jsonl",
                "--index",
                "idx",
                "--coarse",
                "2:4",
                "--transform",
                "prefix",
                "--shortlist",
                "15",
                "--json",
                *extra,
            ]
        )
        == 0
    )
    report = json.loads(capsys.readouterr().out)
    assert report["action"] == "updated" and report["encoded"] == 0
    assert (
        report["config"]["coarse_layer"],
        report["config"]["coarse_dim"],
        report["config"]["transform"],
        report["config"]["shortlist"],
    ) == (2, 4, "prefix", 15)
    manifest = json.loads((built / "manifest.json").read_text())
    assert manifest["config"]["coarse_layer"] == 2


def test_model_argument_folder_or_hub_name(
    workspace: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A missing folder is an error; an ``owner/name`` is tried as a hub name (never by default)."""
    import esrag.encoder.encoder as encoder_module
    from esrag.cli import _common

    asked: list[str] = []

    class OfflineEncoder:
        def __init__(self, name: str, device: str | None = None) -> None:
            asked.append(name)
            raise OSError("We couldn't connect to 'https://huggingface.co'")

    monkeypatch.setattr(encoder_module, "EspressoEncoder", OfflineEncoder)
    monkeypatch.setattr(_common, "_ENCODERS", {})
    assert main(["build", "corpus.jsonl", "--index", "idx", "--model", "./no-such-model"]) == 2
    assert "./no-such-model: no such model folder" in capsys.readouterr().err
    assert asked == []
    assert main(["build", "corpus.jsonl", "--index", "idx", "--model", "someone/some-model"]) == 2
    err = capsys.readouterr().err
    assert "someone/some-model: no such model folder, and loading it as a Hugging Face hub name failed" in err
    assert asked == ["someone/some-model"]
    assert not (workspace / "idx").exists()
