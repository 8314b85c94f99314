"""Shallow-first ingest: a coarse-only index, searchable at once, filled in resumably.

The tiny random BERT (3 layers, 32 dims) with a layer-1 coarse stage; synthetic corpora whose
full build is the exact reference: a shallow-first build, interrupted during its fill-in and
resumed, must end identical to it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from langchain_core.embeddings import DeterministicFakeEmbedding

from esrag.cli.main import main
from esrag.errors import CoarseOnlyError
from esrag.index import CascadeConfig, CascadeIndex
from esrag.langchain.vectorstore import CascadeVectorStore
from tests.conftest import TINY_WORDS

CFG = CascadeConfig(coarse_layer=1, coarse_dim=8, train_size=100)
QUERIES = ["cat dog river", "protein gene cell", "fast search index", "red blue green"]


def corpus(n: int, seed: int = 0) -> tuple[list[str], list[str], list[dict[str, Any]]]:
    rng = np.random.default_rng(seed)
    texts = [" ".join(rng.choice(TINY_WORDS, int(rng.integers(3, 14)))) for _ in range(n)]
    return [f"d{i:04d}" for i in range(n)], texts, [{"g": i % 3} for i in range(n)]


class Interrupt(Exception):
    """Stands for a Ctrl-C in the middle of the fill-in."""


def interrupt_after(monkeypatch: pytest.MonkeyPatch, encoder: Any, calls: int) -> None:
    """Make ``encoder.encode`` raise on its call number ``calls + 1``."""
    real, seen = encoder.encode, [0]

    def encode(*args: Any, **kwargs: Any) -> Any:
        seen[0] += 1
        if seen[0] > calls:
            raise Interrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(encoder, "encode", encode)


def assert_same_index(got: CascadeIndex, want: CascadeIndex, ids: list[str]) -> None:
    for mode in ("cascade", "coarse", "fine"):
        a = got.search(QUERIES, k=10, shortlist=40, mode=mode)
        b = want.search(QUERIES, k=10, shortlist=40, mode=mode)
        assert a.ids == b.ids, mode
        np.testing.assert_allclose(a.scores, b.scores, atol=1e-6)
        assert a.mode == mode
    filtered = got.search(QUERIES, k=5, filter={"g": 1})
    assert filtered.ids == want.search(QUERIES, k=5, filter={"g": 1}).ids
    got_ids, got_fine = got.fine_vectors(ids)
    want_ids, want_fine = want.fine_vectors(ids)
    assert got_ids == want_ids == ids
    np.testing.assert_allclose(got_fine, want_fine, atol=1e-6)


def test_interrupted_fill_in_resumes_and_ends_identical_to_a_full_build(
    tiny_encoder: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ids, texts, metas = corpus(300)
    full = CascadeIndex.build(tiny_encoder, texts, ids=ids, metadatas=metas, config=CFG, batch_size=16)
    full.save(tmp_path / "full")
    index = CascadeIndex.build(
        tiny_encoder, texts, ids=ids, metadatas=metas, config=CFG, batch_size=16, shallow_first=True
    )
    assert index.coarse_only and index.stats()["fine_vectors"] == 0
    folder = tmp_path / "sf"
    index.save(folder)  # searchable now
    interrupt_after(monkeypatch, tiny_encoder, 5)  # chunks of 32 = 2 batches: 2 chunks committed
    with pytest.raises(Interrupt):
        index.fill_fine(folder, chunk_size=20, batch_size=16)  # rounded up to 32
    monkeypatch.undo()
    loaded = CascadeIndex.load(folder, tiny_encoder)
    assert loaded.manifest is not None and loaded.manifest.fine_parts == (32, 32)
    assert loaded.manifest.format_version == 3
    assert loaded.stats()["mode"] == "coarse-only: fine vectors for 64 of 300 documents"
    assert loaded.search(QUERIES, k=5).ids == full.search(QUERIES, k=5, mode="coarse").ids
    # the interrupted one resumes too: its in-memory rows match the folder's
    assert index.stats()["fine_vectors"] == 64
    assert loaded.fill_fine(folder, chunk_size=20, batch_size=16) == 236
    assert not loaded.coarse_only and loaded.stats()["mode"] == "cascade"
    assert loaded.manifest.fine_parts is None and loaded.manifest.format_version == 2
    assert_same_index(loaded, full, ids)
    done = CascadeIndex.load(folder, tiny_encoder)
    assert_same_index(done, full, ids)
    files = sorted(done.manifest.files)  # an ordinary version: the files of a full build
    assert files == sorted(CascadeIndex.load(tmp_path / "full", tiny_encoder).manifest.files)
    assert done.fill_fine(folder) == 0  # complete: nothing to do
    # a complete index takes writes again, and they get both passes
    done.add(["cat and dog"], ids=["new"])
    assert done.fine_vectors(["new"])[0] == ["new"]


def test_in_memory_fill_and_save_before_any_chunk(tiny_encoder: Any, tmp_path: Path) -> None:
    ids, texts, metas = corpus(120, seed=1)
    full = CascadeIndex.build(tiny_encoder, texts, ids=ids, metadatas=metas, config=CFG, batch_size=8)
    index = CascadeIndex.build(
        tiny_encoder, texts, ids=ids, metadatas=metas, config=CFG, batch_size=8, shallow_first=True
    )
    assert index.fill_fine(chunk_size=50, batch_size=8) == 120  # no folder: in memory
    assert_same_index(index, full, ids)
    # fill_fine(folder) on an index never saved there saves it first
    other = CascadeIndex.build(tiny_encoder, texts, ids=ids, metadatas=metas, config=CFG, shallow_first=True)
    other.fill_fine(tmp_path / "x", chunk_size=40, batch_size=8)
    assert_same_index(CascadeIndex.load(tmp_path / "x", tiny_encoder), full, ids)


def test_searches_during_fill_in_are_coarse_mode_and_say_so(tiny_encoder: Any) -> None:
    ids, texts, metas = corpus(150, seed=2)
    index = CascadeIndex.build(
        tiny_encoder, texts, ids=ids, metadatas=metas, config=CFG, batch_size=16, shallow_first=True
    )
    result = index.search(QUERIES, k=5)
    assert result.mode == "coarse" and all(len(r) == 5 for r in result.ids)
    assert index.search(QUERIES, k=5, mode="coarse").ids == result.ids
    assert index.stats()["mode"] == "coarse-only: fine vectors for 0 of 150 documents"
    with pytest.raises(ValueError, match=r"mode='fine' needs every fine vector.*0 of 150"):
        index.search(QUERIES, mode="fine")
    with pytest.raises(CoarseOnlyError, match=r"coarse-only: fine vectors for 0 of 150.*fill_fine"):
        index.add(["a new one"])
    with pytest.raises(CoarseOnlyError, match="adds, upserts, deletes and reconfigure wait"):
        index.delete(["d0001"])
    with pytest.raises(CoarseOnlyError, match="wait until"):
        index.reconfigure(coarse_dim=4)
    with pytest.raises(ValueError, match=r"have no fine vector yet.*fill_fine"):
        index.fine_vectors(["d0001"])
    store = CascadeVectorStore(tiny_encoder, index=index)
    assert store.search_mode == store.as_retriever().search_mode == index.stats()["mode"]
    assert [d.id for d in store.similarity_search("cat dog river", k=3)] == result.ids[0][:3]
    index.fill_fine(batch_size=16)
    assert store.search_mode == "cascade" and index.search(QUERIES, k=5).mode == "cascade"


def test_bad_combinations_are_refused(tiny_encoder: Any) -> None:
    _, texts, _ = corpus(40)
    for config, match in (
        (CascadeConfig(), r"coarse layer 3 is not below the fine layer 3.*coarse_layer"),
        (CascadeConfig(coarse_layer=1, transform="adapter"), r"cannot fit the 'adapter' transform"),
        (CascadeConfig(coarse_layer=1, query_layer=2), r"does not support shallow queries \(query_layer 2\)"),
    ):
        with pytest.raises(ValueError, match=match):
            CascadeIndex.build(tiny_encoder, texts, config=config, shallow_first=True)
    with pytest.raises(ValueError, match="needs an esrag EspressoEncoder"):
        CascadeIndex.build(DeterministicFakeEmbedding(size=8), texts, shallow_first=True)
    with pytest.raises(ValueError, match="empty corpus"):
        CascadeIndex.build(tiny_encoder, [], config=CFG, shallow_first=True)
    index = CascadeIndex.build(tiny_encoder, texts, config=CFG, shallow_first=True)
    with pytest.raises(ValueError, match="chunk_size must be a positive int"):
        index.fill_fine(chunk_size=0)


def _build_args(model: Path, *extra: str) -> list[str]:
    return ["build", "corpus.jsonl", "--index", "ix", "--model", str(model), "--coarse", "1:8", *extra]


def _write_corpus(path: Path, n: int) -> list[str]:
    ids, texts, metas = corpus(n, seed=3)
    path.write_text(
        "".join(
            json.dumps({"id": i, "text": t, **m}) + "\n" for i, t, m in zip(ids, texts, metas, strict=True)
        )
    )
    return ids


def test_cli_shallow_first_end_to_end(
    tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    _write_corpus(tmp_path / "corpus.jsonl", 200)
    assert main([*_build_args(tiny_model_dir, "--shallow-first", "--fill-chunk", "50", "--json")]) == 0
    report = json.loads(capsys.readouterr().out)
    assert (report["action"], report["filled"], report["mode"]) == ("built", 200, "cascade")
    assert 0 < report["searchable_seconds"] <= report["seconds"]
    assert main(["search", "--index", "ix", "cat dog", "-k", "3", "--json"]) == 0
    hit = json.loads(capsys.readouterr().out)
    assert (hit["mode"], hit["index_mode"], len(hit["hits"])) == ("cascade", "cascade", 3)
    # the same results as a full build; a rerun is up to date
    assert (
        main(["build", "corpus.jsonl", "--index", "full", "--model", str(tiny_model_dir), "--coarse", "1:8"])
        == 0
    )
    capsys.readouterr()
    assert main(["search", "--index", "full", "cat dog", "-k", "3", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["hits"] == hit["hits"]
    assert main([*_build_args(tiny_model_dir, "--shallow-first", "--json")]) == 0
    assert json.loads(capsys.readouterr().out)["action"] == "up to date"
    for extra, match in (
        (["--cache-embeddings"], "--shallow-first cannot be combined with --cache-embeddings"),
        (["--fill-chunk", "0"], "--fill-chunk must be a positive number"),
    ):
        assert main([*_build_args(tiny_model_dir, "--shallow-first", "--rebuild", *extra)]) == 2
        assert match in capsys.readouterr().err
    assert (
        main(["build", "corpus.jsonl", "--index", "bad", "--model", str(tiny_model_dir), "--shallow-first"])
        == 2
    )
    assert "coarse layer 3 is not below the fine layer 3" in capsys.readouterr().err


def test_cli_fill_in_killed_with_sigkill_resumes(
    tiny_model_dir: Path,
    tiny_encoder: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.chdir(tmp_path)
    _write_corpus(tmp_path / "corpus.jsonl", 1000)
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    args = [*_build_args(tiny_model_dir, "--shallow-first", "--fill-chunk", "16", "--batch-size", "8", "-q")]
    proc = subprocess.Popen([sys.executable, "-m", "esrag.cli.main", *args], cwd=tmp_path, env=env)
    manifest, deadline = tmp_path / "ix" / "manifest.json", time.monotonic() + 240
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if manifest.is_file() and sum(json.loads(manifest.read_text()).get("fine_parts", [0])) >= 64:
                break
            time.sleep(0.005)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, "the fill-in finished before it could be killed"
    assert main(["search", "--index", "ix", "cat dog", "-k", "3"]) == 0
    assert "(coarse-only: fine vectors for" in capsys.readouterr().out
    assert main([*_build_args(tiny_model_dir, "--batch-size", "8", "--json")]) == 0  # resumes, then syncs
    report = json.loads(capsys.readouterr().out)
    assert report["mode"] == "cascade" and 0 < report["filled"] < 1000 and report["encoded"] == 0
    assert (
        main(
            [
                "build",
                "corpus.jsonl",
                "--index",
                "full",
                "--model",
                str(tiny_model_dir),
                "--coarse",
                "1:8",
                "--batch-size",
                "8",
            ]
        )
        == 0
    )
    capsys.readouterr()
    got, want = CascadeIndex.load("ix", tiny_encoder), CascadeIndex.load("full", tiny_encoder)
    assert got.ids() == want.ids()
    assert_same_index(got, want, want.ids())


def test_a_failed_commit_leaves_the_folder_and_the_next_fill_saves_it_whole(
    tiny_encoder: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import esrag.index.cascade as cascade_module

    ids, texts, metas = corpus(100, seed=4)
    index = CascadeIndex.build(tiny_encoder, texts, ids=ids, metadatas=metas, config=CFG, shallow_first=True)
    folder = tmp_path / "ix"
    index.save(folder)

    def full_disk(*args: Any) -> None:
        raise OSError(28, f"{folder}: committing fine vectors failed (No space left on device)")

    monkeypatch.setattr(cascade_module, "commit_chunk", full_disk)
    with pytest.raises(OSError, match="No space left"):
        index.fill_fine(folder, chunk_size=16, batch_size=8)
    assert index.stats()["fine_vectors"] == 16  # in memory; the folder still has none
    assert CascadeIndex.load(folder, tiny_encoder).stats()["fine_vectors"] == 0
    monkeypatch.undo()
    assert index.fill_fine(folder, chunk_size=16, batch_size=8) == 84
    full = CascadeIndex.build(tiny_encoder, texts, ids=ids, metadatas=metas, config=CFG, batch_size=8)
    assert_same_index(CascadeIndex.load(folder, tiny_encoder), full, ids)
