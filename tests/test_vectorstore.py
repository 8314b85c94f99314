"""CascadeVectorStore beyond the standard suites: ESE encoder, filters, persistence."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from langchain_core.documents import Document
from langchain_core.embeddings import DeterministicFakeEmbedding

from esrag.index import CascadeConfig, ModelMismatchError
from esrag.langchain.vectorstore import CascadeRetriever, CascadeVectorStore

TEXTS = [
    f"the {w} reads a paper about {t}"
    for w in ("cat", "dog", "bird", "fish")
    for t in ("gene", "protein", "cancer", "virus", "drug")
]
METAS = [{"animal": t.split()[1], "n": i} for i, t in enumerate(TEXTS)]


@pytest.fixture
def store(tiny_encoder: Any) -> CascadeVectorStore:
    return CascadeVectorStore.from_texts(
        TEXTS,
        tiny_encoder,
        METAS,
        ids=[f"t{i}" for i in range(len(TEXTS))],
        config=CascadeConfig(coarse_layer=2, coarse_dim=8, transform="prefix"),
    )


def test_ese_store_search_filter_and_retriever(store: CascadeVectorStore) -> None:
    docs = store.similarity_search("the cat reads", k=3, filter={"animal": "dog"})
    assert len(docs) == 3 and all(d.metadata["animal"] == "dog" for d in docs)
    scored = store.similarity_search_with_score("the cat reads", k=20, shortlist=20)
    assert [d.id for d, _ in scored] == [
        d.id for d, _ in store.similarity_search_with_score("the cat reads", k=20, mode="fine")
    ]
    assert all(-1.0 <= s <= 1.0 for _, s in scored)
    retriever = store.as_retriever(
        search_kwargs={"k": 2, "shortlist": 10, "filter": {"animal": {"$in": ["cat", "fish"]}}}
    )
    assert isinstance(retriever, CascadeRetriever)
    got = retriever.invoke("a fish")
    assert len(got) == 2 and all(d.metadata["animal"] in ("cat", "fish") for d in got)
    with pytest.raises(ValueError, match="unknown filter field 'colour'"):
        store.similarity_search("x", filter={"colour": "red"})
    with pytest.raises(TypeError, match="unexpected search argument"):
        store.similarity_search("x", k=2, fetch_k=9)
    with pytest.raises(ValueError, match=r"shortlist \(2\) must be >= k \(3\)"):
        store.similarity_search("x", k=3, shortlist=2)


def test_search_by_vector_uses_exact_fine_stage(store: CascadeVectorStore, tiny_encoder: Any) -> None:
    vector = tiny_encoder.encode(["the bird reads"])[0].tolist()
    by_vector = store.similarity_search_by_vector(vector, k=4)
    assert [d.id for d in by_vector] == [
        d.id for d in store.similarity_search("the bird reads", k=4, mode="fine")
    ]


def test_store_save_load(store: CascadeVectorStore, tiny_encoder: Any, tmp_path: Path) -> None:
    store.delete(["t0", "t1"])
    store.add_documents([Document(page_content="the cat reads", metadata={"animal": "cat"}, id="t2")])
    before = store.similarity_search_with_score("the dog reads", k=5)
    store.save(tmp_path / "store")
    loaded = CascadeVectorStore.load(tmp_path / "store", tiny_encoder)
    assert loaded.similarity_search_with_score("the dog reads", k=5) == before
    assert loaded.get_by_ids(["t0", "t2"]) == [
        Document(id="t2", page_content="the cat reads", metadata={"animal": "cat"})
    ]
    with pytest.raises(ModelMismatchError):
        CascadeVectorStore.load(tmp_path / "store", DeterministicFakeEmbedding(size=32))


async def test_async_api(store: CascadeVectorStore) -> None:
    ids = await store.aadd_texts(["a new text about gene"], [{"animal": "cow"}], ids=["new"])
    assert ids == ["new"]
    docs = await store.asimilarity_search("gene", k=1, filter={"animal": "cow"})
    assert [d.id for d in docs] == ["new"]
    assert await store.adelete(["new"])
    assert await store.aget_by_ids(["new"]) == []
    assert len(await store.as_retriever(k=3).ainvoke("gene")) == 3


def test_delete_all_and_add_texts_ids(store: CascadeVectorStore) -> None:
    store.delete()
    assert store.similarity_search("cat", k=1) == []
    ids = store.add_texts(["x", "y"], ids=[None, "b"])  # type: ignore[list-item]
    assert ids[1] == "b" and len(ids[0]) == 36
    assert {d.id for d in store.get_by_ids(ids)} == set(ids)


def test_espresso_embeddings_wrapper_uses_both_views(tiny_encoder: Any, tmp_path: Path) -> None:
    from esrag.langchain.embeddings import EspressoEmbeddings

    embeddings = EspressoEmbeddings(encoder=tiny_encoder)
    store = CascadeVectorStore.from_texts(
        TEXTS, embeddings, METAS, config=CascadeConfig(coarse_layer=1, coarse_dim=8, transform="prefix")
    )
    assert store.embeddings is embeddings
    assert store.index.source_dim == 32 and store.index.coarse_dim == 8  # layer-1 view, cut to 8
    assert not store.index.same_vectors  # layer-1 coarse source, layer-3 fine view
    store.save(tmp_path / "s")
    loaded = CascadeVectorStore.load(tmp_path / "s", tiny_encoder)  # same model, unwrapped
    assert [d.id for d in loaded.similarity_search("the cat", k=3)] == [
        d.id for d in store.similarity_search("the cat", k=3)
    ]


def test_max_marginal_relevance(store: CascadeVectorStore) -> None:
    plain = store.similarity_search("the cat reads a paper about gene", k=4)
    diverse = store.max_marginal_relevance_search(
        "the cat reads a paper about gene", k=4, fetch_k=12, lambda_mult=0.2
    )
    assert len(diverse) == 4 and diverse[0].id == plain[0].id
    mmr = store.as_retriever(search_type="mmr", search_kwargs={"k": 3, "fetch_k": 10})
    assert len(mmr.invoke("a dog")) == 3
    ids, vectors = store.index.fine_vectors(["t3", "missing", "t4"])
    assert ids == ["t3", "t4"] and vectors.shape == (2, 32)


def test_unknown_keyword_arguments_are_refused_per_method(store: CascadeVectorStore) -> None:
    with pytest.raises(
        TypeError, match=r"^delete: unexpected keyword argument\(s\) \['cascade'\]; supported: ids$"
    ):
        store.delete(["t0"], cascade=True)
    assert store.get_by_ids(["t0"])  # nothing was deleted
    with pytest.raises(
        TypeError,
        match=r"^similarity_search_by_vector: unexpected search argument\(s\) \['mode'\]; "
        r"supported: k, filter, shortlist$",
    ):
        store.similarity_search_by_vector([0.1] * 32, k=2, mode="fine")
    with pytest.raises(
        TypeError,
        match=r"^max_marginal_relevance_search: unexpected search argument\(s\) \['mode'\]; "
        r"supported: k, fetch_k, lambda_mult, filter, shortlist$",
    ):
        store.max_marginal_relevance_search("x", mode="fine")
    with pytest.raises(
        TypeError,
        match=r"^similarity_search: unexpected search argument\(s\) \['fetch_k'\]; "
        r"supported: k, filter, shortlist, mode, exit_margin$",
    ):
        store.similarity_search_with_score("x", fetch_k=9)
    with pytest.raises(
        TypeError, match=r"^add_texts: unexpected keyword argument\(s\) \['colour'\]; supported"
    ):
        store.add_texts(["x"], colour="red")
    with pytest.raises(
        TypeError, match=r"^from_texts: unexpected keyword argument\(s\) \['colour'\]; supported"
    ):
        CascadeVectorStore.from_texts(["x"], DeterministicFakeEmbedding(size=8), colour="red")
    with pytest.raises(TypeError, match="batch_size must be an int >= 1, got '8'"):
        store.add_texts(["x"], batch_size="8")
    with pytest.raises(ValueError, match="batch_size must be an int >= 1, got 0"):
        CascadeVectorStore(DeterministicFakeEmbedding(size=8), batch_size=0)
    assert len(store.index) == len(TEXTS)
