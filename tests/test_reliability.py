"""Issue 12, library side: each test reproduces one broken promise (it failed before the fix).

Rejected batches change nothing; the model identity covers every setting that changes a
vector; manifests are bounds-checked; saves publish whole versions (format 2) and still
read format 1; a full disk is an ``OSError``; the minor items (tombstone warning, MMR by
vector, ``use_gpu`` on a CPU machine, symlinked index paths).
"""

from __future__ import annotations

import datetime
import errno
import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from langchain_core.embeddings import DeterministicFakeEmbedding

from esrag.errors import InconsistentIndexError
from esrag.index import CascadeConfig, CascadeIndex, IndexFormatError, ModelMismatchError, SearchMode
from esrag.index.coarse import CoarseIndex, gpu_available
from esrag.index.fine import FineStore
from esrag.index.format import data_folder

N, DIM = 60, 12
FORMAT1 = Path(__file__).parent / "data" / "format1"


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _vectors(n: int = N, seed: int = 0) -> np.ndarray:
    return _unit(np.random.default_rng(seed).standard_normal((n, DIM)))


def _index(**config: Any) -> CascadeIndex:
    v = _vectors()
    return CascadeIndex.build_from_embeddings(
        v,
        v,
        ids=[f"d{i}" for i in range(N)],
        texts=[f"text {i}" for i in range(N)],
        metadatas=[{"g": i % 3} for i in range(N)],
        config=CascadeConfig(coarse_dim=4, **config),
    )


def _snapshot(index: CascadeIndex) -> tuple[Any, ...]:
    q = _vectors(5, seed=9)
    hits = [index.search_embeddings(q, q, k=5, mode=m).ids for m in SearchMode]
    stats = {k: v for k, v in index.stats().items() if k != "fine_memory_mapped"}
    return len(index), stats, index.ids(), hits, index.get_by_ids(["d0", "d59"])


# ------------------------------------------------------------------ rejected batches
BAD_BATCHES = [
    (
        "metadata object",
        {"metadatas": [{}, {"when": object()}]},
        TypeError,
        r"metadatas\[1\]\['when'\] is a object",
    ),
    ("metadata set", {"metadatas": [{"tags": {1, 2}}, {}]}, TypeError, r"metadatas\[0\]\['tags'\] is a set"),
    (
        "metadata nan",
        {"metadatas": [{}, {"score": float("nan")}]},
        ValueError,
        r"metadatas\[1\]\['score'\] is nan",
    ),
    (
        "metadata inf",
        {"metadatas": [{"s": [1.0, np.float64("inf")]}, {}]},
        ValueError,
        r"metadatas\[0\]\['s'\]\[1\] is inf",
    ),
    (
        "metadata surrogate",
        {"metadatas": [{}, {"t": "a\ud800b"}]},
        ValueError,
        r"metadatas\[1\]\['t'\] cannot be written as UTF-8: character 1",
    ),
    (
        "metadata key surrogate",
        {"metadatas": [{"\udc00": 1}, {}]},
        ValueError,
        r"metadatas\[0\] key '\\udc00' cannot be written",
    ),
    (
        "metadata array",
        {"metadatas": [{"v": np.zeros(3)}, {}]},
        TypeError,
        r"metadatas\[0\]\['v'\] is a ndarray",
    ),
    (
        "text surrogate",
        {"texts": ["ok", "bad \ud800"]},
        ValueError,
        r"texts\[1\] cannot be written as UTF-8: character 4 is '\\ud800'",
    ),
    ("id surrogate", {"ids": ["n1", "\ud83d"]}, ValueError, r"ids\[1\] cannot be written as UTF-8"),
]


@pytest.mark.parametrize(("case", "kwargs", "error", "message"), BAD_BATCHES, ids=[b[0] for b in BAD_BATCHES])
def test_a_rejected_batch_changes_nothing_and_the_next_save_is_good(
    tmp_path: Path, case: str, kwargs: dict[str, Any], error: type[Exception], message: str
) -> None:
    index = _index()
    before = _snapshot(index)
    new = _vectors(2, seed=5)
    call = {"ids": ["n1", "n2"], "texts": ["a", "b"], **kwargs}
    with pytest.raises(error, match=message):
        index.add_embeddings(new, new, **call)
    assert _snapshot(index) == before
    index.save(tmp_path / "idx")
    assert _snapshot(CascadeIndex.load(tmp_path / "idx")) == before


def test_rejected_texts_through_add_change_nothing() -> None:
    index = CascadeIndex.build(DeterministicFakeEmbedding(size=8), [f"doc {i}" for i in range(20)])
    before = index.ids()
    with pytest.raises(ValueError, match=r"texts\[2\] cannot be written as UTF-8"):
        index.add(["a", "b", "c\udfff"], ids=["x", "y", "z"])
    with pytest.raises(TypeError, match=r"metadatas\[0\]\['d'\] is a complex"):
        index.add(["a"], metadatas=[{"d": 1j}])
    assert index.ids() == before


def test_metadata_conversions_are_stored_and_filterable(tmp_path: Path) -> None:
    index = _index()
    new = _vectors(1, seed=6)
    meta = {
        "n": np.int64(3),
        "f": np.float32(0.5),
        "b": np.bool_(True),
        "day": datetime.date(2024, 5, 1),
        "at": datetime.datetime(2024, 5, 1, 12, 30),
        "np_day": np.datetime64("2024-05-01"),
        "pair": (1, "x"),
        "nested": {"k": [np.int32(1), None]},
    }
    index.add_embeddings(new, new, ids=["conv"], metadatas=[meta])
    want = {
        "n": 3,
        "f": 0.5,
        "b": True,
        "day": "2024-05-01",
        "at": "2024-05-01T12:30:00",
        "np_day": "2024-05-01",
        "pair": [1, "x"],
        "nested": {"k": [1, None]},
    }
    assert index.get_by_ids(["conv"])[0].metadata == want
    assert type(index.get_by_ids(["conv"])[0].metadata["n"]) is int
    index.save(tmp_path / "idx")
    loaded = CascadeIndex.load(tmp_path / "idx")
    assert loaded.get_by_ids(["conv"])[0].metadata == want
    for flt in ({"n": 3}, {"day": "2024-05-01"}, {"n": np.int64(3)}):
        assert loaded.search_embeddings(new, new, k=3, filter=flt).ids == [["conv"]]


@pytest.mark.parametrize("stage", ["coarse", "fine"])
def test_an_insert_that_fails_inside_changes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, stage: str
) -> None:
    """Out of memory (or a FAISS error) inside an upsert: the state is as before, saveable."""
    index = _index()
    before = _snapshot(index)

    def boom(*_args: Any, **_kwargs: Any) -> None:
        raise MemoryError("out of memory")

    target = (CoarseIndex, "add") if stage == "coarse" else (FineStore, "reserve")
    monkeypatch.setattr(*target, boom)
    new = _vectors(3, seed=7)
    with pytest.raises(MemoryError):
        index.add_embeddings(new, new, ids=["d1", "d2", "brand-new"])  # two upserts, one new
    monkeypatch.undo()
    assert _snapshot(index) == before
    index.save(tmp_path / "idx")
    assert _snapshot(CascadeIndex.load(tmp_path / "idx")) == before


def test_save_refuses_an_inconsistent_state_and_keeps_the_good_folder(tmp_path: Path) -> None:
    index = _index()
    index.save(tmp_path / "idx")
    good = data_folder(tmp_path / "idx")
    index._state.docs.append("stray", {})  # a bug elsewhere left the parts disagreeing
    with pytest.raises(InconsistentIndexError, match=r"idx: not saved, the index is inconsistent \(61 doc"):
        index.save(tmp_path / "idx")
    assert data_folder(tmp_path / "idx") == good
    assert CascadeIndex.load(tmp_path / "idx").ids() == [f"d{i}" for i in range(N)]


# ------------------------------------------------------------------ model identity
@pytest.fixture(scope="module")
def tiny_index(tmp_path_factory: pytest.TempPathFactory, tiny_encoder: Any) -> Path:
    folder = tmp_path_factory.mktemp("identity") / "idx"
    texts = [f"the cat {w} the dog" for w in ("runs", "eats", "reads", "sees", "likes")] * 4
    CascadeIndex.build(tiny_encoder, texts, config=CascadeConfig(coarse_layer=2)).save(folder)
    return folder


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (
            {"pooling": "cls"},
            r"manifest\.json: pooling differs: the index was built with 'mean', the query encoder has 'cls'",
        ),
        (
            {"max_length": 32},
            r"max_length \(tokens\) differs: the index was built with 64, the query encoder has 32",
        ),
    ],
)
def test_identity_covers_pooling_and_max_length(
    tiny_index: Path, tiny_model_dir: Path, settings: dict[str, Any], message: str
) -> None:
    from esrag.encoder import EspressoEncoder

    same_weights = EspressoEncoder(tiny_model_dir, device="cpu", **settings)
    with pytest.raises(ModelMismatchError, match=message):
        CascadeIndex.load(tiny_index, same_weights)


def test_identity_covers_the_tokenizer(tiny_index: Path, tiny_model_dir: Path, tmp_path: Path) -> None:
    from esrag.encoder import EspressoEncoder

    other = Path(shutil.copytree(tiny_model_dir, tmp_path / "model"))
    spec = json.loads((other / "tokenizer.json").read_text())
    vocab = spec["model"]["vocab"]
    vocab["cat"], vocab["dog"] = vocab["dog"], vocab["cat"]  # same weights, other ids
    (other / "tokenizer.json").write_text(json.dumps(spec))
    encoder = EspressoEncoder(other, device="cpu")
    with pytest.raises(
        ModelMismatchError, match=r"tokenizer fingerprint differs: the index was built with [0-9a-f]{16}…"
    ):
        CascadeIndex.load(tiny_index, encoder)


def test_identity_covers_the_query_view(tiny_encoder: Any, tmp_path: Path) -> None:
    from esrag.langchain.embeddings import EspressoEmbeddings

    texts = [f"the {w} sees the cat" for w in ("dog", "bird", "fish", "tree", "car")] * 4
    asym = EspressoEmbeddings(encoder=tiny_encoder, document_view=(3, 32), query_view=(2, 32))
    CascadeIndex.build(asym, texts).save(tmp_path / "idx")
    CascadeIndex.load(tmp_path / "idx", asym)  # the same views load
    sym = EspressoEmbeddings(encoder=tiny_encoder, document_view=(3, 32), query_view=(3, 32))
    with pytest.raises(
        ModelMismatchError,
        match=r"query view differs: the index was built with \[2, 32\], the query encoder has \[3, 32\]",
    ):
        CascadeIndex.load(tmp_path / "idx", sym)


def test_identity_is_recorded(tiny_index: Path, tiny_encoder: Any) -> None:
    identity = json.loads((tiny_index / "manifest.json").read_text())["identity"]
    assert identity == {
        "weights": tiny_encoder.fingerprint,
        "tokenizer": identity["tokenizer"],
        "pooling": "mean",
        "max_length": 64,
        "coarse_source_view": [2, 32],
        "fine_view": [3, 32],
        "query_view": [3, 32],
        "normalize": "l2",
    }
    CascadeIndex.load(tiny_index, tiny_encoder)  # after encoding (the tokenizer's call state changed)


# ------------------------------------------------------------------ format 1 still loads
def _exact(fine: np.ndarray, queries: np.ndarray, k: int) -> list[list[int]]:
    return np.argsort(-(queries @ fine.T), axis=1, kind="stable")[:, :k].tolist()


def test_a_format_1_folder_loads_and_converts_on_save(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import sys

    sys.path.insert(0, str(FORMAT1))
    try:
        from make_format1 import vectors
    finally:
        sys.path.remove(str(FORMAT1))
    source, fine = vectors()
    folder = Path(shutil.copytree(FORMAT1 / "vectors", tmp_path / "v1"))
    assert json.loads((folder / "manifest.json").read_text())["format_version"] == 1
    index = CascadeIndex.load(folder)
    assert len(index) == 39 and "d3" not in index
    q = _unit(fine[[0, 5, 9]])
    keep = [i for i in range(len(fine)) if i != 3]
    want = [[f"d{keep[j]}" for j in row] for row in _exact(_unit(fine[keep]), q, 5)]
    assert index.search_embeddings(_unit(source[[0, 5, 9]]), q, k=5, mode="fine").ids == want
    assert index.search_embeddings(q[:, ::-1].copy(), q, k=1, filter={"g": 2}).ids[1] == ["d5"]
    index.save(folder)  # converts: a version folder, the flat files gone
    assert sorted(p.name for p in folder.iterdir()) == ["manifest.json", "versions"]
    again = CascadeIndex.load(folder)
    assert again.search_embeddings(_unit(source[[0, 5, 9]]), q, k=5, mode="fine").ids == want
    assert json.loads((folder / "manifest.json").read_text())["format_version"] == 2
    # an embeddings index of format 1: weights are checked, the rest cannot be (warning)
    embeddings = Path(shutil.copytree(FORMAT1 / "embeddings", tmp_path / "e1"))
    with caplog.at_level(logging.WARNING, logger="esrag.index.identity"):
        loaded = CascadeIndex.load(embeddings, DeterministicFakeEmbedding(size=8))
    assert "(index format 1) records only the weights and the views" in caplog.text
    assert loaded.search("text number 3", k=1).ids == [["t3"]]
    with pytest.raises(ModelMismatchError, match="fingerprint"):
        CascadeIndex.load(embeddings, DeterministicFakeEmbedding(size=16))


# ------------------------------------------------------------------ manifest bounds
def _edit_manifest(folder: Path, **changes: Any) -> None:
    path = folder / "manifest.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        (
            {"next_id": 2**63 + 5},
            r"manifest\.json: malformed manifest \(field 'next_id' must be at most 4611686018427387904",
        ),
        ({"next_id": 10}, r"count 60 \+ tombstones 0 exceed next_id 10"),
        (
            {"format_version": 0},
            r"manifest\.json: missing or invalid 'format_version' \(an int >= 1\), got 0",
        ),
        ({"format_version": -3}, r"invalid 'format_version' \(an int >= 1\), got -3"),
        ({"format_version": True}, r"invalid 'format_version' \(an int >= 1\), got True"),
        ({"format_version": 1.0}, r"invalid 'format_version' \(an int >= 1\), got 1\.0"),
        ({"fine_dim": 0}, r"field 'fine_dim' must be >= 1, got 0"),
        ({"coarse_dim": 13}, r"coarse_dim 13 exceeds source_dim 12"),
        (
            {"version": "../elsewhere"},
            r"field 'version' must be the name of a version folder, got '\.\./elsewhere'",
        ),
        ({"version": None}, r"field 'version' must be the name of a version folder, got None"),
        (
            {"version": "0000-gone"},
            r"manifest\.json: .*versions/0000-gone: the version named by .* is missing",
        ),
        ({"identity": [1]}, r"field 'identity' must be an object or null, got \[1\]"),
    ],
)
def test_manifest_fields_are_bounded(tmp_path: Path, changes: dict[str, Any], message: str) -> None:
    _index().save(tmp_path / "idx")
    _edit_manifest(tmp_path / "idx", **changes)
    with pytest.raises(IndexFormatError, match=message):
        CascadeIndex.load(tmp_path / "idx")


def test_format_2_manifest_needs_its_version(tmp_path: Path) -> None:
    _index().save(tmp_path / "idx")
    path = tmp_path / "idx" / "manifest.json"
    data = json.loads(path.read_text())
    del data["version"]
    path.write_text(json.dumps(data))
    with pytest.raises(IndexFormatError, match=r"manifest lacks field\(s\) \['version'\]"):
        CascadeIndex.load(tmp_path / "idx")


# ------------------------------------------------------------------ versions on disk
def test_saves_publish_versions_and_delete_the_old_ones(tmp_path: Path) -> None:
    index = _index()
    folder = tmp_path / "idx"
    index.save(folder)
    first = data_folder(folder)
    assert first.parent == folder / "versions" and first.is_dir()
    index.delete(["d0"])
    index.save(folder)
    second = data_folder(folder)
    assert second != first and not first.exists()
    assert [p.name for p in (folder / "versions").iterdir()] == [second.name]
    assert "d0" not in CascadeIndex.load(folder)


def test_a_version_being_read_is_kept_until_the_next_save(tmp_path: Path) -> None:
    import fcntl

    index = _index()
    folder = tmp_path / "idx"
    index.save(folder)
    held = data_folder(folder)
    fd = os.open(held, os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_SH)  # what a reader in another process holds while it loads
    try:
        index.save(folder)
        assert held.is_dir() and data_folder(folder) != held
    finally:
        os.close(fd)
    index.save(folder)
    assert not held.exists() and len(list((folder / "versions").iterdir())) == 1


def test_a_symlinked_index_path_stays_a_symlink(tmp_path: Path) -> None:
    real = tmp_path / "disk" / "real-index"
    real.mkdir(parents=True)
    link = tmp_path / "idx"
    link.symlink_to(real, target_is_directory=True)
    index = _index()
    index.save(link)
    index.delete(["d1"])
    index.save(link)
    assert link.is_symlink() and os.readlink(link) == str(real)
    assert (real / "manifest.json").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["disk", "idx"]  # no .old/.tmp left
    assert "d1" not in CascadeIndex.load(link)
    dangling = tmp_path / "later"
    dangling.symlink_to(tmp_path / "disk" / "not-yet", target_is_directory=True)
    index.save(dangling)  # a new index is created at the link's target
    assert dangling.is_symlink() and len(CascadeIndex.load(dangling)) == N - 1


def test_saving_onto_a_regular_file_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "idx").write_text("not a folder")
    with pytest.raises(NotADirectoryError, match=r"idx: is a file, not an index folder"):
        _index().save(tmp_path / "idx")
    assert (tmp_path / "idx").read_text() == "not a folder"


@pytest.mark.parametrize("where", ["fine", "coarse", "publish"])
def test_a_failed_write_is_an_oserror_naming_the_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    import esrag._versions
    from esrag.index.coarse import CoarseIndex

    index = _index()
    folder = tmp_path / "idx"
    index.save(folder)
    before = sorted(p.name for p in folder.rglob("*"))

    def full(*_args: Any, **_kwargs: Any) -> None:
        if where == "coarse":  # how faiss reports a failed fwrite
            raise RuntimeError("Error in faiss::FileIOWriter: fwrite failed\nwrote 10 of 40 bytes")
        raise OSError(errno.ENOSPC, "No space left on device")

    target = {
        "fine": (FineStore, "write"),
        "coarse": (CoarseIndex, "write"),
        "publish": (esrag._versions, "atomic_write_bytes"),
    }[where]
    monkeypatch.setattr(*target, full)
    index.delete(["d2"])
    with pytest.raises(
        OSError, match=r"idx: saving the index failed .*; the previous version is still in place"
    ):
        index.save(folder)
    monkeypatch.undo()
    assert sorted(p.name for p in folder.rglob("*")) == before  # the draft is gone too
    assert "d2" in CascadeIndex.load(folder)


# ------------------------------------------------------------------ minor items
def test_tombstone_warning_once_per_crossing(caplog: pytest.LogCaptureFixture) -> None:
    n = 1200
    v = _unit(np.random.default_rng(1).standard_normal((n, 8)))
    index = CascadeIndex.build_from_embeddings(
        v, v, ids=[f"d{i}" for i in range(n)], config=CascadeConfig(coarse_dim=4, index_type="HNSW16")
    )
    with caplog.at_level(logging.WARNING, logger="esrag.index.coarse"):
        for start in range(0, 1100, 10):  # crosses 1000 tombstones, then 10 more deletes
            index.delete([f"d{i}" for i in range(start, start + 10)])
    assert caplog.text.count("coarse vectors are tombstones") == 1


def test_mmr_by_vector(tmp_path: Path) -> None:
    from esrag.langchain.vectorstore import CascadeVectorStore

    emb = DeterministicFakeEmbedding(size=16)
    texts = [f"doc {i}" for i in range(30)] + ["doc 3"] * 3  # near-duplicates of doc 3
    store = CascadeVectorStore.from_texts(texts, emb, ids=[f"i{i}" for i in range(len(texts))])
    vector = emb.embed_query("doc 3")
    plain = [d.id for d in store.similarity_search_by_vector(vector, k=3)]
    diverse = [
        d.id for d in store.max_marginal_relevance_search_by_vector(vector, k=3, fetch_k=10, lambda_mult=0.1)
    ]
    assert len(set(plain) & {"i3", "i30", "i31", "i32"}) == 3  # the duplicates crowd the top
    assert len(diverse) == 3 and len(set(diverse) & {"i3", "i30", "i31", "i32"}) == 1
    with pytest.raises(
        TypeError, match="max_marginal_relevance_search_by_vector: unexpected search argument"
    ):
        store.max_marginal_relevance_search_by_vector(vector, colour=1)


@pytest.mark.skipif(gpu_available(), reason="checks the CPU fallback")
def test_an_index_saved_with_use_gpu_loads_on_a_cpu_machine(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    _index().save(tmp_path / "idx")
    path = tmp_path / "idx" / "manifest.json"
    data = json.loads(path.read_text())
    data["config"]["use_gpu"] = True  # as written on a GPU machine
    path.write_text(json.dumps(data))
    with caplog.at_level(logging.WARNING, logger="esrag.index.coarse"):
        index = CascadeIndex.load(tmp_path / "idx")
    assert "saved with use_gpu=True" in caplog.text and "searching on the CPU" in caplog.text
    q = _vectors(2, seed=3)
    assert len(index.search_embeddings(q, q, k=3).ids[0]) == 3


def test_a_filter_of_the_wrong_type_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    v = _vectors(10)
    index = CascadeIndex.build_from_embeddings(
        v, v, metadatas=[{"year": str(2000 + i)} for i in range(10)], config=CascadeConfig(coarse_dim=4)
    )
    with caplog.at_level(logging.WARNING, logger="esrag.index.docstore"):
        assert index.search_embeddings(v[:1], v[:1], k=3, filter={"year": 2001}).ids == [[]]
    assert (
        "filter on 'year' matches no document: it asks for number 2001, the stored values are str"
        in caplog.text
    )
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="esrag.index.docstore"):
        assert index.search_embeddings(v[:1], v[:1], k=3, filter={"year": "1999"}).ids == [[]]
    assert caplog.text == ""  # the right type, just no match: nothing to say
