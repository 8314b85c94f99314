"""Shallow queries against deep documents: the query map, the query pass stopping at the query
layer (forward hooks) through the index, the vector store and the CLI, persistence and the
identity check."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from langchain_core.embeddings import DeterministicFakeEmbedding

from esrag.cli.main import main
from esrag.encoder import View
from esrag.index import CascadeConfig, CascadeIndex, IndexFormatError, ModelMismatchError
from esrag.index.batch import DocBatch
from esrag.index.config import QueryMapKind
from esrag.index.format import data_folder
from esrag.index.query import LinearMap, QueryMap, QuerySetup, fit_query_map
from esrag.langchain.embeddings import EspressoEmbeddings
from esrag.langchain.vectorstore import CascadeVectorStore
from tests.conftest import layers_run, ran

WORDS = "cat dog bird fish tree car house river city music paper cell gene protein drug virus".split()
TEXTS = [f"the {a} sees the {b} and the {c}" for a in WORDS for b in WORDS[:6] for c in WORDS[5:9] if a != b][
    :120
]
QUERIES = ["the cat sees the dog", "a protein and a gene", "the river city"]


# ---------------------------------------------------------------------- the map
def test_ridge_map_recovers_a_known_linear_relation() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(500, 8))
    a, c = rng.normal(size=(8, 5)), rng.normal(size=5)
    fitted = LinearMap.ridge(x, x @ a + c, 1e-9)
    np.testing.assert_allclose(fitted.matrix, a, atol=1e-4)
    np.testing.assert_allclose(fitted.bias, c, atol=1e-4)
    np.testing.assert_allclose(LinearMap.unpack(fitted.packed()).matrix, fitted.matrix)
    # through a QueryMap: shallow vectors -> a coarse source (8 -> 6) and a fine space (8 -> 4)
    source_w, fine_w = rng.normal(size=(8, 6)), rng.normal(size=(8, 4))
    unit = lambda v: v / np.linalg.norm(v, axis=1, keepdims=True)  # noqa: E731
    qmap = fit_query_map(
        QuerySetup(QueryMapKind.RIDGE, 1, False), x, unit(x @ source_w), unit(x @ fine_w), ridge=1e-9
    )
    assert (qmap.layer, qmap.fine_dim, qmap.input_dim) == (1, 4, 8)
    queries = rng.normal(size=(20, 8))
    source, fine = qmap.map_vectors(queries)
    # normalisation is not linear: the map recovers the directions closely, not exactly
    assert np.min(np.sum(source * unit(queries @ source_w), axis=1)) > 0.9
    assert np.min(np.sum(fine * unit(queries @ fine_w), axis=1)) > 0.9
    restored = QueryMap.from_description(json.loads(json.dumps(qmap.describe())), dict(qmap.arrays()))
    np.testing.assert_allclose(restored.map_vectors(queries)[1], fine, atol=1e-6)
    # exact coarse source: only the fine map is fitted, and the source must be given
    exact = fit_query_map(QuerySetup(QueryMapKind.RIDGE, 2, True), x, x[:, :6], x[:, :4], ridge=0.1)
    assert exact.source is None and [name for name, _ in exact.arrays()] == ["fine"]
    with pytest.raises(ValueError, match="pass exact_source="):
        exact.map_vectors(queries)
    # kind none: nothing to fit, the shallow vector's first fine_dim coordinates
    none = fit_query_map(QuerySetup(QueryMapKind.NONE, 1, False), None, x[:, :6], x[:, :4], ridge=0.1)
    np.testing.assert_allclose(none.map_vectors(queries)[1], unit(queries[:, :4]), atol=1e-6)
    with pytest.raises(ValueError, match=r"needs the documents' layer-1 vectors \(query_source=\.\.\.\)"):
        fit_query_map(QuerySetup(QueryMapKind.RIDGE, 1, False), None, x, x, ridge=0.1)


# ----------------------------------------------------------------- query depth
@pytest.mark.parametrize(("coarse_layer", "query_layer"), [(3, 1), (1, 2), (2, 2)])
def test_query_pass_stops_at_the_query_layer(tiny_encoder: Any, coarse_layer: int, query_layer: int) -> None:
    config = CascadeConfig(coarse_layer=coarse_layer, query_layer=query_layer, coarse_dim=8, transform="pca")
    with layers_run(tiny_encoder) as calls:
        index = CascadeIndex.build(tiny_encoder, TEXTS, config=config)
        assert ran(calls) == [1, 2, 3]  # documents run to the fine layer (and capture the query layer)
        assert index.query_map is not None and index.query_map.kind is QueryMapKind.RIDGE
        assert index.query_map.exact_source is (coarse_layer <= query_layer)
        for mode in ("cascade", "coarse", "fine"):
            result = index.search(QUERIES, k=3, mode=mode)
            depth = coarse_layer if mode == "coarse" and coarse_layer <= query_layer else query_layer
            assert ran(calls) == list(range(1, depth + 1)), mode
            assert index.query_depth(mode) == depth and all(len(ids) == 3 for ids in result.ids)
        index.encode_queries(QUERIES, full_depth=True)  # the reference: the documents' views
        assert ran(calls) == [1, 2, 3] and index.query_depth(full_depth=True) == 3
    assert index.stats()["query_layer"] == query_layer and index.stats()["query_map"] == "ridge"
    assert index.config.query_layer == query_layer and index.config.query_map is QueryMapKind.RIDGE
    # searching with text is searching with the mapped vectors of the encoder's own views
    wide = tiny_encoder.encode(QUERIES, views=[(query_layer, 32)])[0]
    exact = tiny_encoder.encode(QUERIES, views=[(coarse_layer, 32)])[0]
    source, fine = index.query_map.map_vectors(wide, exact if coarse_layer <= query_layer else None)
    assert index.search(QUERIES, k=5).ids == index.search_embeddings(source, fine, k=5).ids


def test_full_depth_index_is_unchanged(tiny_encoder: Any) -> None:
    index = CascadeIndex.build(tiny_encoder, TEXTS[:40], config=CascadeConfig(coarse_layer=1, coarse_dim=8))
    assert index.query_map is None and index.config.query_layer is None
    with layers_run(tiny_encoder) as calls:
        index.search(QUERIES, k=2)
        assert ran(calls) == [1, 2, 3] and index.query_depth() == 3
        index.search(QUERIES, k=2, mode="coarse")
        assert ran(calls) == [1] and index.query_depth("coarse") == 1
    assert CascadeIndex(tiny_encoder, CascadeConfig(query_layer=3)).search("x").ids == [[]]


def test_vector_store_with_shallow_query_view(tiny_encoder: Any) -> None:
    embeddings = EspressoEmbeddings(encoder=tiny_encoder, document_view=(3, 32), query_view=(1, 32))
    store = CascadeVectorStore.from_texts(
        TEXTS, embeddings, config=CascadeConfig(coarse_layer=3, coarse_dim=8, transform="pca")
    )
    qmap = store.index.query_map
    # the embeddings' own query view: the vector as it is (the index ranks like embed_query)
    assert qmap is not None and (qmap.kind, qmap.layer) == (QueryMapKind.NONE, 1)
    with layers_run(tiny_encoder) as calls:
        docs = store.similarity_search_with_score(QUERIES[0], k=4, mode="fine")
        assert ran(calls) == [1]
        store.similarity_search(QUERIES[0], k=4)
        assert ran(calls) == [1]
        store.as_retriever(search_kwargs={"k": 2}).invoke(QUERIES[1])
        assert ran(calls) == [1]
    stored = store.index.fine_vectors([d.id for d, _ in docs])[1]
    expected = stored @ np.array(embeddings.embed_query(QUERIES[0]), dtype=np.float32)
    np.testing.assert_allclose([s for _, s in docs], expected, atol=1e-5)
    # the ridge map on request
    ridge = CascadeIndex.build(embeddings, TEXTS, config=CascadeConfig(coarse_layer=3, query_map="ridge"))
    assert ridge.query_map is not None and ridge.query_map.kind is QueryMapKind.RIDGE


def test_reconfigure_the_query_layer(tiny_encoder: Any) -> None:
    index = CascadeIndex.build(tiny_encoder, TEXTS, config=CascadeConfig(coarse_layer=3, coarse_dim=8))
    with layers_run(tiny_encoder) as calls:
        index.reconfigure(query_layer=2)  # refits the ridge map: the fitting documents re-encoded
        assert ran(calls) == [1, 2, 3]
        index.search(QUERIES, k=3)
        assert ran(calls) == [1, 2]
    assert index.query_map is not None and index.query_map.layer == 2
    wide = tiny_encoder.encode(TEXTS, views=[(1, 32)])[0]
    index.reconfigure(query_layer=1, query_source=wide)  # given vectors: nothing re-encoded
    assert index.query_map is not None and index.query_map.layer == 1
    index.reconfigure(query_map="none")
    assert index.query_map.kind is QueryMapKind.NONE and index.query_map.source is None
    index.reconfigure(query_layer=3)  # the fine layer: full depth again
    assert index.query_map is None
    with layers_run(tiny_encoder) as calls:
        index.search(QUERIES, k=3)
        assert ran(calls) == [1, 2, 3]


def test_vectors_only_shallow_index_and_errors(tiny_encoder: Any) -> None:
    rng = np.random.default_rng(0)
    deep, shallow = rng.normal(size=(50, 16)), rng.normal(size=(50, 16))
    config = CascadeConfig(coarse_layer=3, query_layer=1, fine_view=(3, 16), coarse_dim=4, transform="prefix")
    index = CascadeIndex.build_from_embeddings(deep, deep, config=config, query_source=shallow)
    assert index.query_map is not None and index.query_map.input_dim == 16
    source, fine = index.query_map.map_vectors(shallow[:2])
    assert len(index.search_embeddings(source, fine, k=3).ids[0]) == 3
    with pytest.raises(ValueError, match=r"needs the documents' layer-1 vectors \(query_source=\.\.\.\)"):
        CascadeIndex.build_from_embeddings(deep, deep, config=config)
    with pytest.raises(
        ValueError, match=r"CascadeConfig\.query_layer must be a 1-based layer or None, got 0"
    ):
        CascadeConfig(query_layer=0)
    with pytest.raises(ValueError, match=r"CascadeConfig\.query_map must be one of 'none', 'ridge', got 'x'"):
        CascadeConfig(query_map="x")
    with pytest.raises(
        ValueError, match=r"CascadeConfig\.query_layer 5 is outside the encoder's layers 1\.\.3"
    ):
        CascadeIndex(tiny_encoder, CascadeConfig(query_layer=5))
    embeddings = EspressoEmbeddings(encoder=tiny_encoder, query_view=(2, 32))
    with pytest.raises(
        ModelMismatchError, match=r"query_layer 1 conflicts with the embeddings' query_view 2:32"
    ):
        CascadeIndex(embeddings, CascadeConfig(query_layer=1))
    with pytest.raises(ValueError, match="query_layer 1 needs an elastic ESE encoder"):
        CascadeIndex.build(
            DeterministicFakeEmbedding(size=8), TEXTS[:10], config=CascadeConfig(query_layer=1)
        )


def test_missing_query_vectors_are_encoded_for_the_fit(tiny_encoder: Any) -> None:
    """A concurrent clear() can leave batches encoded without the query layer: they are filled in."""
    from esrag.index.embedder import EmbedderAdapter
    from esrag.index.query_pass import fit_query_vectors

    adapter = EmbedderAdapter(tiny_encoder, CascadeConfig(coarse_layer=3, query_layer=1))
    source, fine = adapter.encode_documents(TEXTS[:5])
    batch = DocBatch([f"d{i}" for i in range(5)], TEXTS[:5], [{}] * 5, source, fine)
    (filled,) = fit_query_vectors(adapter, [batch], 4)
    np.testing.assert_allclose(filled.query, tiny_encoder.encode(TEXTS[:5], views=[(1, 32)])[0], atol=1e-6)
    assert adapter.encode_documents(TEXTS[:2], query_source=True)[2].shape == (2, 32)


# ------------------------------------------------------------------ persistence
@pytest.fixture
def shallow_index(tiny_encoder: Any, tmp_path: Path) -> Path:
    config = CascadeConfig(coarse_layer=3, query_layer=1, coarse_dim=8, transform="pca")
    CascadeIndex.build(tiny_encoder, TEXTS, ids=[f"t{i}" for i in range(len(TEXTS))], config=config).save(
        tmp_path / "idx"
    )
    return tmp_path / "idx"


def test_shallow_index_saves_loads_and_refuses_other_query_views(
    shallow_index: Path, tiny_encoder: Any
) -> None:
    manifest = json.loads((shallow_index / "manifest.json").read_text())
    assert manifest["query_view"] == [1, 32] and manifest["query_map"] == "ridge"
    assert {"query_map.json", "query_map_source.npy", "query_map_fine.npy"} <= set(manifest["files"])
    loaded = CascadeIndex.load(shallow_index, tiny_encoder)
    assert loaded.query_map is not None and loaded.query_map.layer == 1
    with layers_run(tiny_encoder) as calls:
        hits = loaded.search(QUERIES, k=4)
        assert ran(calls) == [1]
    wide = tiny_encoder.encode(QUERIES, views=[(1, 32)])[0]
    assert hits.ids == loaded.search_embeddings(*loaded.query_map.map_vectors(wide), k=4).ids
    # the embeddings' own query view at the index's layer is fine; another one is refused
    same = CascadeIndex.load(shallow_index, EspressoEmbeddings(encoder=tiny_encoder, query_view=(1, 32)))
    assert same.search(QUERIES, k=4).ids == hits.ids
    with pytest.raises(ModelMismatchError, match=r"manifest\.json: CascadeConfig\.query_layer 1 conflicts"):
        CascadeIndex.load(shallow_index, EspressoEmbeddings(encoder=tiny_encoder))
    edited = json.loads((shallow_index / "manifest.json").read_text())
    (shallow_index / "manifest.json").write_text(json.dumps({**edited, "query_view": [2, 32]}))
    with pytest.raises(
        ModelMismatchError, match=r"answers queries encoded with view 2:32, the encoder gives 1:32"
    ):
        CascadeIndex.load(shallow_index, tiny_encoder)


def test_query_map_files_are_checked(shallow_index: Path, tiny_encoder: Any) -> None:
    manifest = json.loads((shallow_index / "manifest.json").read_text())
    files = data_folder(shallow_index)
    np.save(files / "query_map_fine.npy", np.zeros((3, 3), np.float32))
    manifest["files"]["query_map_fine.npy"]["bytes"] = (files / "query_map_fine.npy").stat().st_size
    (shallow_index / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(
        IndexFormatError, match=r"query_map_fine\.npy: expected float32 query map of shape \(33, 32\)"
    ):
        CascadeIndex.load(shallow_index, tiny_encoder, verify=False)
    del manifest["files"]["query_map_fine.npy"]
    (shallow_index / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(IndexFormatError, match=r"query_map_fine\.npy is not listed in the manifest"):
        CascadeIndex.load(shallow_index, tiny_encoder, verify=False)
    del manifest["files"]["query_map.json"]
    (shallow_index / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(IndexFormatError, match=r"required file\(s\) \['query_map\.json'\] are not listed"):
        CascadeIndex.load(shallow_index, tiny_encoder)
    (shallow_index / "manifest.json").write_text(json.dumps({**manifest, "query_map": "linear"}))
    with pytest.raises(IndexFormatError, match=r"field 'query_map' must be 'none', 'ridge' or null"):
        CascadeIndex.load(shallow_index, tiny_encoder)


def test_index_written_before_query_maps_still_loads(tiny_encoder: Any, tmp_path: Path) -> None:
    index = CascadeIndex.build(tiny_encoder, TEXTS[:40], config=CascadeConfig(coarse_layer=2, coarse_dim=8))
    index.save(tmp_path / "old")
    path = tmp_path / "old" / "manifest.json"
    manifest = json.loads(path.read_text())
    for name in ("query_view", "query_map"):
        del manifest[name]
    for name in ("query_layer", "query_map"):
        del manifest["config"][name]
    manifest["identity"] = None  # as an index written before both (format 1): views unchecked
    path.write_text(json.dumps(manifest))
    loaded = CascadeIndex.load(tmp_path / "old", tiny_encoder)
    assert loaded.query_map is None and loaded.search(QUERIES, k=3).ids == index.search(QUERIES, k=3).ids
    # an embedder with a shallow query view of its own needs no fitted map (the vector as it is)
    wrapped = CascadeIndex.load(
        tmp_path / "old", EspressoEmbeddings(encoder=tiny_encoder, query_view=(1, 32))
    )
    with layers_run(tiny_encoder) as calls:
        wrapped.search(QUERIES, k=3)
        assert ran(calls) == [1]
    # a ridge map cannot be made up at load time
    manifest["config"]["query_map"] = "ridge"
    path.write_text(json.dumps(manifest))
    with pytest.raises(ModelMismatchError, match=r"has no query map for queries at layer 1; rebuild it"):
        CascadeIndex.load(tmp_path / "old", EspressoEmbeddings(encoder=tiny_encoder, query_view=(1, 32)))


# ------------------------------------------------------------------------ CLI
def test_cli_build_and_search_with_a_query_layer(
    tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from esrag.cli._common import load_encoder

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ESRAG_CACHE", str(tmp_path / "cache"))
    (tmp_path / "c.jsonl").write_text(
        "".join(json.dumps({"id": f"d{i}", "text": t}) + "\n" for i, t in enumerate(TEXTS))
    )
    model = str(tiny_model_dir)
    encoder = load_encoder(model)  # the instance the commands below use (cached per process)
    common = ["--model", model, "--coarse", "3:8", "-q"]
    assert main(["build", "c.jsonl", "--index", "shallow", "--query-layer", "1", *common, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert (report["config"]["query_layer"], report["config"]["query_map"]) == (1, "ridge")
    with layers_run(encoder) as calls:
        for mode in ("cascade", "coarse", "fine"):
            assert (
                main(["search", "--index", "shallow", QUERIES[0], "-k", "3", "--mode", mode, "--json"]) == 0
            )
            assert len(json.loads(capsys.readouterr().out)["hits"]) == 3
            assert ran(calls) == [1], mode
        # a full-depth index searched with --query-layer: the vector as it is
        assert main(["build", "c.jsonl", "--index", "full", *common]) == 0
        assert "coarse: layer 3" in capsys.readouterr().out
        ran(calls)
        assert main(["search", "--index", "full", QUERIES[0], "--query-layer", "2", "--json"]) == 0
        assert ran(calls) == [1, 2]
        capsys.readouterr()
    assert main(["search", "--index", "shallow", QUERIES[0], "--query-layer", "2"]) == 2
    assert "ridge query map was fitted for layer 1, not 2" in capsys.readouterr().err
    # the cached-embeddings build fits the same map
    assert (
        main(["build", "c.jsonl", "--index", "cached", "--query-layer", "1", "--cache-embeddings", *common])
        == 0
    )
    assert "queries: encoder pass to layer 1 (ridge query map)" in capsys.readouterr().out
    a, b = CascadeIndex.load("shallow", encoder), CascadeIndex.load("cached", encoder)
    assert a.query_map is not None and b.query_map is not None and a.query_map.fine is not None
    np.testing.assert_allclose(a.query_map.fine.matrix, b.query_map.fine.matrix, atol=1e-4)
    assert View(1, 32) == View(*json.loads(Path("cached/manifest.json").read_text())["query_view"])


def test_eval_of_a_shallow_index_reports_end_to_end(shallow_index: Path, tiny_encoder: Any) -> None:
    from esrag.evaluation.cascade import evaluate_cascade

    index = CascadeIndex.load(shallow_index, tiny_encoder)
    queries = {f"q{i}": TEXTS[i][:18] for i in range(0, 60, 6)}
    qrels = {f"q{i}": {f"t{i}": 1} for i in range(0, 60, 6)}
    with layers_run(tiny_encoder) as calls:
        ev = evaluate_cascade(index, queries, qrels, shortlist=20, timing_queries=3)
        assert ran(calls) == [1, 2, 3]  # the cascade's queries (layer 1) and the full-depth reference
    out = ev.to_json()
    assert out["cascade"]["settings"]["query_layer"] == 1 and out["cascade"]["settings"]["query_depth"] == 1
    assert out["fine"]["settings"]["query_depth"] == 3
    cascade, fine = ev.cascade.end_to_end, ev.fine.end_to_end
    assert cascade is not None and fine is not None and cascade.timed_queries == 3
    assert cascade.encoder_flops * 3 == pytest.approx(fine.encoder_flops)  # 1 of 3 layers, same queries
    assert cascade.ingest_depth == fine.ingest_depth == 3 and cascade.ingest_flops_per_doc > 0
    assert out["cascade"]["end_to_end_ms_p50"] > 0 and out["fine"]["end_to_end_flops"] > fine.encoder_flops
    assert "| end_to_end_ms_p50 |" in ev.to_markdown()
    # the reference is the full-depth exact search, not the shallow query's fine mode
    full = CascadeIndex.build(
        tiny_encoder,
        [d.text for d in index.get_by_ids(index.ids())],
        ids=index.ids(),
        config=CascadeConfig(coarse_layer=3, coarse_dim=8, transform="pca"),
    )
    assert evaluate_cascade(full, queries, qrels, timing_queries=0).fine.metrics == ev.fine.metrics
