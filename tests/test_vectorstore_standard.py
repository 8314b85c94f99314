"""langchain-tests standard suites for CascadeVectorStore and its retriever."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from langchain_core.documents import Document
from langchain_core.embeddings import DeterministicFakeEmbedding
from langchain_tests.integration_tests import (
    RetrieversIntegrationTests,
    VectorStoreIntegrationTests,
)

from esrag.langchain.vectorstore import CascadeRetriever, CascadeVectorStore


class TestCascadeVectorStoreStandard(VectorStoreIntegrationTests):
    @pytest.fixture
    def vectorstore(self) -> Iterator[CascadeVectorStore]:  # type: ignore[override]
        store = CascadeVectorStore(self.get_embeddings())
        try:
            yield store
        finally:
            store.delete()


_TEXTS = [f"document number {i} about topic {i % 3}" for i in range(12)]


def _store() -> CascadeVectorStore:
    return CascadeVectorStore.from_texts(
        _TEXTS,
        DeterministicFakeEmbedding(size=16),
        metadatas=[{"topic": i % 3} for i in range(12)],
        ids=[str(i) for i in range(12)],
    )


class TestCascadeRetrieverStandard(RetrieversIntegrationTests):
    @property
    def retriever_constructor(self) -> type[CascadeRetriever]:
        return CascadeRetriever

    @property
    def retriever_constructor_params(self) -> dict[str, Any]:
        return {"vectorstore": _store()}

    @property
    def retriever_query_example(self) -> str:
        return "document about topic 1"


def test_as_retriever_search_kwargs() -> None:
    store = _store()
    retriever = store.as_retriever(search_kwargs={"k": 2, "shortlist": 5, "filter": {"topic": 1}})
    docs = retriever.invoke("topic 1")
    assert len(docs) == 2
    assert all(isinstance(d, Document) and d.metadata["topic"] == 1 for d in docs)
    assert len(retriever.invoke("topic 1", k=4)) == 4
