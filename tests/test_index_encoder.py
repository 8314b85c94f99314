"""CascadeIndex with real embedders: the tiny ESE encoder and a plain LangChain Embeddings."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from langchain_core.embeddings import DeterministicFakeEmbedding

from esrag.index import CascadeConfig, CascadeIndex, Transform

WORDS = "cat dog bird fish tree car house river city music paper cell gene protein".split()
TEXTS = [
    f"the {a} sees the {b} {i % 3}" for i, (a, b) in enumerate((a, b) for a in WORDS for b in WORDS if a != b)
][:60]


class SpyEncoder:
    """Delegates to an EspressoEncoder and records every encode() call."""

    def __init__(self, encoder: Any) -> None:
        self._encoder = encoder
        self.calls: list[tuple[int, list[Any]]] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._encoder, name)

    def encode(self, texts: Any, views: Any = None, **kwargs: Any) -> Any:
        self.calls.append((len(texts), list(views or [])))
        return self._encoder.encode(texts, views, **kwargs)

    def encode_staged(self, texts: Any, views: Any, on_layer: Any, **kwargs: Any) -> None:
        self.calls.append((len(texts), list(views)))  # a progressive search's one pass
        self._encoder.encode_staged(texts, views, on_layer, **kwargs)


@pytest.mark.parametrize("transform", ["prefix", "pca", "adapter"])
def test_build_streams_batches_and_one_pass_per_query(tiny_encoder: Any, transform: str) -> None:
    spy = SpyEncoder(tiny_encoder)
    cfg = CascadeConfig(coarse_layer=2, coarse_dim=8, transform=transform, train_size=30)
    index = CascadeIndex.build(spy, TEXTS, config=cfg, batch_size=16, show_progress_bar=False)
    assert len(index) == len(TEXTS) and index.transform is not None
    assert index.transform.kind is Transform(transform) and index.coarse_dim == 8
    assert all(n <= 16 for n, _ in spy.calls)  # memory bounded by the batch
    assert sum(n for n, _ in spy.calls) == len(TEXTS)  # each text encoded once
    assert {str(v) for v in spy.calls[0][1]} == {"2:32", "3:32"}  # both views, one pass
    spy.calls.clear()
    queries = ["the cat sees the dog", "the gene sees the protein"]
    got = index.search(queries, k=5, shortlist=len(TEXTS))
    assert len(spy.calls) == 1 and spy.calls[0][0] == 2
    fine_docs = tiny_encoder.encode(TEXTS, [(3, 32)])[0]
    fine_q = tiny_encoder.encode(queries, [(3, 32)])[0]
    exact = index.search(queries, k=5, mode="fine")
    assert got.ids == exact.ids
    np.testing.assert_allclose(exact.scores, np.sort(fine_q @ fine_docs.T, axis=1)[:, ::-1][:, :5], atol=1e-5)


def test_encoder_default_views_and_reconfigure(tiny_encoder: Any) -> None:
    index = CascadeIndex.build(tiny_encoder, TEXTS, ids=[str(i) for i in range(len(TEXTS))])
    # defaults: coarse source = last layer full width = the fine view; 64 dims > 32 -> identity
    assert index.source_dim == index.fine_dim == 32 and index.coarse_dim == 32
    spy = SpyEncoder(tiny_encoder)
    index._adapter.original = spy  # type: ignore[union-attr]
    index.reconfigure(coarse_layer=1, coarse_dim=8, transform="pca", index_type="HNSW32")
    assert index.config.coarse_layer == 1 and index.coarse_dim == 8
    assert sum(n for n, _ in spy.calls) == len(TEXTS)  # re-encoded the stored texts
    assert index.search("the cat sees the dog", k=3, shortlist=len(TEXTS)).ids == (
        index.search("the cat sees the dog", k=3, mode="fine").ids
    )


def test_plain_embeddings_fall_back_to_one_vector() -> None:
    small = CascadeIndex.build(DeterministicFakeEmbedding(size=6), TEXTS[:10])
    assert small.transform is not None and small.transform.kind is Transform.PREFIX
    assert small.coarse_dim == 6  # single effective stage: the coarse vector is the vector
    wide = CascadeIndex.build(DeterministicFakeEmbedding(size=48), TEXTS, config=CascadeConfig(coarse_dim=16))
    assert wide.transform is not None and wide.transform.kind is Transform.PCA
    hit = wide.search(TEXTS[7], k=1, shortlist=50)
    assert hit.ids[0] and wide.get_by_ids(hit.ids[0])[0].text == TEXTS[7]
    assert hit.scores[0][0] == pytest.approx(1.0, abs=1e-5)


def test_text_input_errors(tiny_encoder: Any) -> None:
    index = CascadeIndex(tiny_encoder)
    with pytest.raises(TypeError, match="texts must be a list of strings, not a single string"):
        index.add("one text")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"texts\[1\] must be a str, got int"):
        index.add(["a", 3])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="duplicate id 'x' at positions 0 and 1"):
        index.add(["a", "b"], ids=["x", "x"])
    with pytest.raises(ValueError, match="got 3 metadatas for 2 documents"):
        index.add(["a", "b"], metadatas=[{}, {}, {}])
    with pytest.raises(ValueError, match="k must be >= 1"):
        index.search("q", k=0)
    with pytest.raises(TypeError, match="must be an esrag EspressoEncoder or a LangChain Embeddings"):
        CascadeIndex(object())
    assert index.add([]) == [] and len(index) == 0


def test_espresso_embeddings_views_are_honoured(tiny_encoder: Any) -> None:
    from esrag.encoder import View
    from esrag.langchain.embeddings import EspressoEmbeddings

    spy = SpyEncoder(tiny_encoder)
    embeddings = EspressoEmbeddings(encoder=spy, document_view=(2, 16), query_view=(1, 16))  # type: ignore[arg-type]
    cfg = CascadeConfig(coarse_layer=1, coarse_dim=8, transform="prefix")
    index = CascadeIndex.build(embeddings, TEXTS, config=cfg, batch_size=64)
    assert (index.source_dim, index.fine_dim) == (32, 16)
    assert {str(v) for v in spy.calls[0][1]} == {"1:32", "2:16"}  # documents: one pass, document_view
    docs = np.array(embeddings.embed_documents(TEXTS), dtype=np.float32)
    _, stored = index.fine_vectors(index.ids())
    np.testing.assert_allclose(stored, docs, atol=1e-5)
    queries = ["the cat sees the dog", "the gene sees the protein"]
    spy.calls.clear()
    got = index.search(queries, k=5, mode="fine")
    assert len(spy.calls) == 1 and {str(v) for v in spy.calls[0][1]} == {"1:32", "1:16"}  # query_view
    scores = np.array([embeddings.embed_query(q) for q in queries], dtype=np.float32) @ docs.T
    np.testing.assert_allclose(got.scores, np.sort(scores, axis=1)[:, ::-1][:, :5], atol=1e-5)
    assert index.search(queries, k=5, shortlist=len(TEXTS)).ids == got.ids
    # a CascadeConfig.fine_view must agree with both views of the embeddings
    with pytest.raises(
        ValueError,
        match=r"CascadeConfig\.fine_view 3:32 conflicts with the embeddings' views "
        r"\(document_view 2:16, query_view 1:16\): leave fine_view unset",
    ):
        CascadeIndex(embeddings, CascadeConfig(fine_view=(3, 32)))
    with pytest.raises(ValueError, match=r"fine_view 2:16 conflicts"):
        CascadeIndex(embeddings, CascadeConfig(fine_view=(2, 16)))  # the queries use 1:16
    same = EspressoEmbeddings(encoder=tiny_encoder, document_view=(2, 16), query_view=(2, 16))
    agreeing = CascadeIndex(same, CascadeConfig(fine_view=(2, 16)))
    assert agreeing._adapter is not None and agreeing._adapter.fine_view == View(2, 16)
    # the default views of the embeddings are the encoder's default view: as with the bare encoder
    plain = CascadeIndex(EspressoEmbeddings(encoder=tiny_encoder), CascadeConfig(coarse_layer=2))
    bare = CascadeIndex(tiny_encoder, CascadeConfig(coarse_layer=2))
    assert plain._adapter is not None and bare._adapter is not None
    assert (plain._adapter.source_view, plain._adapter.fine_view, plain._adapter.query_view) == (
        bare._adapter.source_view,
        bare._adapter.fine_view,
        bare._adapter.query_view,
    )


def test_coarse_mode_stops_at_the_coarse_layer(tiny_encoder: Any) -> None:
    cfg = CascadeConfig(coarse_layer=1, coarse_dim=8, transform="prefix")
    index = CascadeIndex.build(tiny_encoder, TEXTS, config=cfg)
    queries = ["the cat sees the dog", "the gene sees the protein"]
    source, fine = index.encode_queries(queries)
    expected = index.search_embeddings(source, fine, k=5, mode="coarse")
    calls: list[int] = []
    hooks = [
        layer.register_forward_hook(lambda *_a, i=i: calls.append(i))
        for i, layer in enumerate(tiny_encoder.model.encoder.layer, start=1)
    ]
    try:
        coarse = index.search(queries, k=5, mode="coarse")
        coarse_layers = sorted(set(calls))
        calls.clear()
        index.search(queries, k=5)
        cascade_layers = sorted(set(calls))
    finally:
        for hook in hooks:
            hook.remove()
    assert coarse_layers == [1]  # the query pass stopped at the coarse layer
    assert cascade_layers == [1, 2, 3]
    assert coarse.ids == expected.ids
    np.testing.assert_allclose(coarse.scores, expected.scores, atol=1e-6)
    # a plain Embeddings has one vector: coarse mode still works
    small = CascadeIndex.build(DeterministicFakeEmbedding(size=6), TEXTS[:10])
    assert small.search(TEXTS[3], k=1, mode="coarse").ids == [[small.ids()[3]]]
