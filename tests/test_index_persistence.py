"""Saving and loading cascade indexes: identical results, clear errors, crash safety."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from langchain_core.embeddings import DeterministicFakeEmbedding

from esrag._io import atomic_folder, atomic_write_bytes, recover_folder
from esrag.index import (
    CascadeConfig,
    CascadeIndex,
    IndexFormatError,
    ModelMismatchError,
    SearchMode,
)
from esrag.index.format import data_folder

N, DIM = 600, 24


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope="module")
def vectors() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(7)
    fine = _unit(rng.standard_normal((N, DIM)))
    source = _unit(fine[:, ::-1] + 0.1 * rng.standard_normal((N, DIM)))
    q_fine = _unit(fine[:20] + 0.2 * rng.standard_normal((20, DIM)))
    q_source = _unit(q_fine[:, ::-1])
    return source, fine, q_source, q_fine


def _index(vectors: tuple[np.ndarray, ...], **config: object) -> CascadeIndex:
    source, fine = vectors[0], vectors[1]
    cfg = CascadeConfig(**{"coarse_dim": 8, **config})  # type: ignore[arg-type]
    return CascadeIndex.build_from_embeddings(
        source,
        fine,
        ids=[f"d{i}" for i in range(N)],
        texts=[f"text {i}" for i in range(N)],
        metadatas=[{"g": i % 4, "name": f"n{i}"} for i in range(N)],
        config=cfg,
    )


def _all_modes(index: CascadeIndex, vectors: tuple[np.ndarray, ...]) -> list[object]:
    """Ids (exact) and scores (rounded: BLAS blocking differs after compaction) of all modes."""
    out: list[object] = []
    for mode in SearchMode:
        for flt in (None, {"g": 2}):
            got = index.search_embeddings(vectors[2], vectors[3], k=7, shortlist=30, filter=flt, mode=mode)
            out.append((got.ids, np.round(np.array(got.scores), 5).tolist()))
    return out


@pytest.mark.parametrize(
    ("index_type", "transform", "fine_dtype"),
    [
        ("Flat", "pca", "float32"),
        ("HNSW32", "adapter", "float16"),
        ("IVF4,Flat", "prefix", "float32"),
        ("IVF4,PQ4x4", "pca", "float16"),
    ],
)
def test_save_load_identical(
    tmp_path: Path,
    vectors: tuple[np.ndarray, ...],
    index_type: str,
    transform: str,
    fine_dtype: str,
) -> None:
    index = _index(vectors, index_type=index_type, transform=transform, fine_dtype=fine_dtype)
    index.delete(["d1", "d2", "d3"])
    moved = _unit(np.random.default_rng(3).standard_normal((1, DIM)))  # no exact ties
    index.add_embeddings(moved, moved, ids=["d5"], texts=["moved"])
    before = _all_modes(index, vectors)
    index.save(tmp_path / "idx")
    loaded = CascadeIndex.load(tmp_path / "idx")
    assert loaded.stats()["fine_memory_mapped"]
    assert len(loaded) == len(index) == N - 3
    assert _all_modes(loaded, vectors) == before
    assert loaded.get_by_ids(["d5", "d1", "d9"]) == index.get_by_ids(["d5", "d9"])
    assert loaded.config == index.config
    manifest = json.loads((tmp_path / "idx" / "manifest.json").read_text())
    assert manifest["count"] == N - 3 and manifest["transform"] == transform
    assert set(manifest["files"]) >= {"coarse.faiss", "fine.npy", "docs.jsonl", "ids.npy"}
    # a loaded index stays writable; saving over itself works
    fresh = _unit(np.random.default_rng(4).standard_normal((2, DIM)))
    loaded.add_embeddings(fresh, fresh, ids=["new1", "new2"])
    loaded.delete(["d10"])
    index.add_embeddings(fresh, fresh, ids=["new1", "new2"])
    index.delete(["d10"])
    # new rows go to an in-memory tail: the mapped base is never copied, results are unchanged
    assert loaded.stats()["fine_memory_mapped"]
    assert _all_modes(loaded, vectors) == _all_modes(index, vectors)
    assert loaded.fine_vectors(["new2", "d0"])[1].tolist() == index.fine_vectors(["new2", "d0"])[1].tolist()
    loaded.save(tmp_path / "idx")
    again = CascadeIndex.load(tmp_path / "idx")
    assert len(again) == N - 2 and "new2" in again and "d10" not in again
    assert _all_modes(again, vectors) == _all_modes(loaded, vectors)


def test_no_pickle_anywhere(tmp_path: Path, vectors: tuple[np.ndarray, ...]) -> None:
    _index(vectors, transform="adapter").save(tmp_path / "idx")
    for path in (tmp_path / "idx").glob("*.npy"):
        np.load(path, allow_pickle=False)  # raises if an object array was pickled


@pytest.fixture
def saved(tmp_path: Path, vectors: tuple[np.ndarray, ...]) -> Path:
    folder = tmp_path / "idx"
    _index(vectors, transform="pca").save(folder)
    return folder


def test_corrupted_file_is_named(saved: Path) -> None:
    path = data_folder(saved) / "fine.npy"
    data = bytearray(path.read_bytes())
    data[-5] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(IndexFormatError, match=r"fine\.npy: checksum mismatch \(corrupted\)"):
        CascadeIndex.load(saved)


def test_truncated_file_is_named(saved: Path) -> None:
    path = data_folder(saved) / "coarse.faiss"
    size = path.stat().st_size
    with open(path, "r+b") as handle:
        handle.truncate(size // 2)
    with pytest.raises(IndexFormatError, match=rf"coarse\.faiss: expected {size} bytes, found {size // 2}"):
        CascadeIndex.load(saved)


def test_unverified_load_still_catches_bad_content(saved: Path) -> None:
    path = data_folder(saved) / "docs.jsonl"
    text = path.read_text()
    path.write_text("[" + text[1:])  # same size, broken JSON on line 1
    with pytest.raises(IndexFormatError, match=r"docs\.jsonl, line 1: bad document record"):
        CascadeIndex.load(saved, verify=False)


def test_missing_files_and_manifest(saved: Path, tmp_path: Path) -> None:
    (data_folder(saved) / "ids.npy").unlink()
    with pytest.raises(IndexFormatError, match=r"ids\.npy: file listed in the manifest is missing"):
        CascadeIndex.load(saved)
    (saved / "manifest.json").unlink()
    with pytest.raises(IndexFormatError, match=r"manifest\.json: missing manifest"):
        CascadeIndex.load(saved)
    with pytest.raises(FileNotFoundError, match="no index folder here"):
        CascadeIndex.load(tmp_path / "nowhere")


def test_bad_manifest(saved: Path) -> None:
    path = saved / "manifest.json"
    manifest = json.loads(path.read_text())
    path.write_text(json.dumps({**manifest, "format_version": 99}))
    with pytest.raises(IndexFormatError, match="index format 99 is newer than this esrag supports"):
        CascadeIndex.load(saved)
    path.write_text("not json")
    with pytest.raises(IndexFormatError, match=r"manifest\.json: unreadable manifest"):
        CascadeIndex.load(saved)
    del manifest["count"]
    path.write_text(json.dumps(manifest))
    with pytest.raises(IndexFormatError, match=r"manifest lacks field\(s\) \['count'\]"):
        CascadeIndex.load(saved)


def test_cannot_save_never_filled_index(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="never held documents"):
        CascadeIndex(None).save(tmp_path / "x")
    assert not (tmp_path / "x").exists()


def test_model_mismatch_plain_embeddings(tmp_path: Path) -> None:
    texts = [f"text number {i}" for i in range(20)]
    index = CascadeIndex.build(DeterministicFakeEmbedding(size=8), texts)
    index.save(tmp_path / "idx")
    same = CascadeIndex.load(tmp_path / "idx", DeterministicFakeEmbedding(size=8))
    assert same.search("text number 3", k=2).ids == index.search("text number 3", k=2).ids
    with pytest.raises(ModelMismatchError, match=r"the index was built with model .*fingerprint"):
        CascadeIndex.load(tmp_path / "idx", DeterministicFakeEmbedding(size=16))


def test_model_mismatch_ese(tmp_path: Path, tiny_encoder: object, tiny_model_dir: Path) -> None:
    import torch

    from esrag.encoder import EspressoEncoder

    texts = [f"the cat {w} the dog" for w in ("runs", "eats", "reads", "sees", "likes")] * 4
    index = CascadeIndex.build(tiny_encoder, texts, config=CascadeConfig(coarse_layer=2))
    index.save(tmp_path / "idx")
    loaded = CascadeIndex.load(tmp_path / "idx", tiny_encoder)
    assert loaded.search(["the cat runs"], k=3).ids == index.search(["the cat runs"], k=3).ids
    other = EspressoEncoder(tiny_model_dir, device="cpu")
    with torch.no_grad():
        next(other.model.parameters()).add_(0.01)  # e.g. fine-tuned weights
    other.refresh_fingerprint()
    with pytest.raises(ModelMismatchError, match=r"manifest\.json: the index was built with model"):
        CascadeIndex.load(tmp_path / "idx", other)
    with pytest.raises(ModelMismatchError, match="built with a elastic embedder"):
        CascadeIndex.load(tmp_path / "idx", DeterministicFakeEmbedding(size=32))


_KILL_SCRIPT = textwrap.dedent(
    """
    import sys, time
    import numpy as np
    from esrag.index import CascadeIndex
    from esrag.index.fine import FineStore

    folder = sys.argv[1]
    index = CascadeIndex.load(folder)
    rng = np.random.default_rng(1)
    extra = rng.standard_normal((50, index.source_dim)).astype("float32")
    index.add_embeddings(extra, extra[:, : index.fine_dim], ids=[f"x{i}" for i in range(50)])
    original_write = FineStore.write

    def slow_write(self, path, rows):
        original_write(self, path, rows)
        print("MIDWAY", flush=True)
        time.sleep(60)

    FineStore.write = slow_write
    index.save(folder)
    """
)


def test_save_killed_midway_keeps_previous_index(saved: Path, vectors: tuple[np.ndarray, ...]) -> None:
    before = _all_modes(CascadeIndex.load(saved), vectors)
    repo = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(repo)}
    proc = subprocess.Popen(
        [sys.executable, "-c", _KILL_SCRIPT, str(saved)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=env,
    )
    leftovers: list[str] = []
    versions = data_folder(saved).parent
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "MIDWAY"
        leftovers = [p.name for p in versions.iterdir() if p.name.startswith(".tmp-")]
        assert leftovers  # the new version was being written beside the current one
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    loaded = CascadeIndex.load(saved)
    assert len(loaded) == N and "x0" not in loaded
    assert _all_modes(loaded, vectors) == before
    # the next save cleans up (the writer is dead: its temporary folder is stale) and succeeds
    loaded.save(saved)
    assert leftovers and not any((versions / name).exists() for name in leftovers)
    assert not [p.name for p in saved.parent.iterdir() if p.name.startswith((".idx.tmp-", ".idx.old-"))]
    assert len(CascadeIndex.load(saved)) == N


@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_saved_files_and_folders_follow_the_umask(
    tmp_path: Path, vectors: tuple[np.ndarray, ...], umask: int
) -> None:
    index = _index(vectors)
    previous = os.umask(umask)
    try:
        index.save(tmp_path / "idx")
        atomic_write_bytes(tmp_path / "cache" / "emb.npy", b"data")
    finally:
        os.umask(previous)
    assert stat.S_IMODE((tmp_path / "idx").stat().st_mode) == 0o777 & ~umask
    inside = list((tmp_path / "idx").rglob("*"))
    modes = {str(p): stat.S_IMODE(p.stat().st_mode) for p in inside if p.is_file()}
    assert set(modes.values()) == {0o666 & ~umask}, modes
    folders = {str(p): stat.S_IMODE(p.stat().st_mode) for p in inside if p.is_dir()}
    assert set(folders.values()) == {0o777 & ~umask}, folders
    assert stat.S_IMODE((tmp_path / "cache" / "emb.npy").stat().st_mode) == 0o666 & ~umask


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait(timeout=60)
    return proc.pid


def test_next_save_removes_only_stale_temporary_folders(saved: Path, vectors: tuple[np.ndarray, ...]) -> None:
    parent, dead = saved.parent, _dead_pid()
    names = {
        "dead writer": f".idx.tmp-{dead}-0a1b2c",
        "this process, no save running": f".idx.tmp-{os.getpid()}-0a1b2d",
        "old esrag, hours ago": ".idx.tmp-a1b2c3d4",
        "live writer": f".idx.tmp-{os.getppid()}-0a1b2e",
        "old esrag, just now": ".idx.tmp-k3j4h5_x",
        "another target": f".other.tmp-{dead}-0a1b2c",
        "look-alike target": f".idx.tmp-{dead}-0a1b2c.tmp-{dead}-0a1b2c",
    }
    for name in names.values():
        (parent / name).mkdir()
        (parent / name / "part.bin").write_bytes(b"x")
    hours_ago = time.time() - 3 * 3600
    os.utime(parent / names["old esrag, hours ago"], (hours_ago, hours_ago))
    _index(vectors).save(saved)
    gone = {label for label, name in names.items() if not (parent / name).exists()}
    assert gone == {"dead writer", "this process, no save running", "old esrag, hours ago"}


def test_save_in_progress_is_left_alone(saved: Path) -> None:
    with atomic_folder(saved) as tmp:
        (tmp / "manifest.json").write_text("{}")
        recover_folder(saved)  # e.g. another thread loading or saving the same folder
        assert tmp.is_dir() and (tmp / "manifest.json").is_file()
    assert json.loads((saved / "manifest.json").read_text()) == {}
    assert [p.name for p in saved.parent.iterdir() if p.name.startswith(".idx.")] == []


def test_swap_interrupted_between_renames_is_undone(saved: Path) -> None:
    before = CascadeIndex.load(saved).ids()
    os.replace(saved, saved.parent / f".idx.old-{_dead_pid()}-0a1b2c")  # crash after the first rename
    assert CascadeIndex.load(saved).ids() == before
    assert [p.name for p in saved.parent.iterdir() if p.name.startswith(".idx.")] == []
    os.replace(saved, saved.parent / ".idx.old-a1b2c3d4")  # the same, left by an older esrag
    assert CascadeIndex.load(saved).ids() == before
    assert [p.name for p in saved.parent.iterdir() if p.name.startswith(".idx.")] == []


def _siblings(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.parent.iterdir() if p.name.startswith(f".{folder.name}."))


def test_failed_writes_leave_the_previous_state(
    saved: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = sorted(p.name for p in saved.iterdir())
    with pytest.raises(RuntimeError, match="boom"), atomic_folder(saved) as tmp:
        (tmp / "part.bin").write_bytes(b"x")
        raise RuntimeError("boom")
    assert sorted(p.name for p in saved.iterdir()) == before and _siblings(saved) == []
    # the final rename fails: the previous folder is put back, the new one removed
    import esrag._io

    real_replace = os.replace

    def failing_replace(src: object, dst: object) -> None:
        if ".tmp-" in str(src):
            raise OSError("disk gone")
        real_replace(src, dst)  # type: ignore[arg-type]

    monkeypatch.setattr(esrag._io.os, "replace", failing_replace)
    with pytest.raises(OSError, match="disk gone"), atomic_folder(saved) as tmp:
        (tmp / "part.bin").write_bytes(b"x")
    monkeypatch.undo()
    assert sorted(p.name for p in saved.iterdir()) == before and _siblings(saved) == []
    assert len(CascadeIndex.load(saved)) == N
    # a file write whose rename fails removes its temporary file
    target = tmp_path / "busy"
    (target / "inside").mkdir(parents=True)
    with pytest.raises(OSError):
        atomic_write_bytes(target, b"data")
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".busy")) == []
