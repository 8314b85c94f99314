"""EspressoEmbeddings: langchain-tests standard suites plus esrag-specific behaviour."""

from __future__ import annotations

import atexit
import functools
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
from langchain_tests.integration_tests import EmbeddingsIntegrationTests
from langchain_tests.unit_tests import EmbeddingsUnitTests

from esrag.encoder import EspressoEncoder, View
from esrag.langchain.embeddings import EspressoEmbeddings
from tests.conftest import build_tiny_model


@functools.lru_cache(maxsize=1)
def _tiny_encoder() -> EspressoEncoder:
    folder = Path(tempfile.mkdtemp(prefix="esrag-tiny-emb-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    return EspressoEncoder(build_tiny_model(folder), device="cpu")


@functools.lru_cache(maxsize=1)
def _default_encoder() -> EspressoEncoder:
    return EspressoEncoder(device="cpu")


class TestEspressoEmbeddingsUnit(EmbeddingsUnitTests):
    @property
    def embeddings_class(self) -> type[EspressoEmbeddings]:
        return EspressoEmbeddings

    @property
    def embedding_model_params(self) -> dict:
        return {"encoder": _tiny_encoder(), "document_view": (3, 32), "query_view": (3, 32)}


class TestEspressoEmbeddingsIntegration(EmbeddingsIntegrationTests):
    """The standard integration suite on the real embedded default model (offline)."""

    @property
    def embeddings_class(self) -> type[EspressoEmbeddings]:
        return EspressoEmbeddings

    @property
    def embedding_model_params(self) -> dict:
        return {"encoder": _default_encoder()}


def test_views_and_values():
    encoder = _tiny_encoder()
    embeddings = EspressoEmbeddings(encoder=encoder, document_view="3:16", query_view=(1, 16))
    docs = embeddings.embed_documents(["the cat", "a dog runs"])
    query = embeddings.embed_query("the cat")
    assert len(docs) == 2 and len(docs[0]) == 16 and len(query) == 16
    assert all(isinstance(x, float) for x in query)
    (expected_doc,) = encoder.encode(["the cat"], [View(3, 16)])
    (expected_query,) = encoder.encode(["the cat"], [View(1, 16)])
    np.testing.assert_allclose(docs[0], expected_doc[0], atol=1e-6)
    np.testing.assert_allclose(query, expected_query[0], atol=1e-6)
    assert embeddings.embed_documents([]) == []


async def test_async_matches_sync():
    embeddings = EspressoEmbeddings(encoder=_tiny_encoder())
    assert await embeddings.aembed_query("a cat") == embeddings.embed_query("a cat")
    assert await embeddings.aembed_documents(["x", "y"]) == embeddings.embed_documents(["x", "y"])


def test_bad_arguments():
    encoder = _tiny_encoder()
    with pytest.raises(ValueError, match=r"must have the same dim"):
        EspressoEmbeddings(encoder=encoder, document_view=(3, 32), query_view=(2, 16))
    with pytest.raises(ValueError, match=r"query_view: .*layer 7 is outside 1..3"):
        EspressoEmbeddings(encoder=encoder, query_view=(7, 8))
    with pytest.raises(ValueError, match="either encoder or model_name_or_path"):
        EspressoEmbeddings("x", encoder=encoder)
    with pytest.raises(ValueError, match="batch_size must be a positive int"):
        EspressoEmbeddings(encoder=encoder, batch_size=0)
    embeddings = EspressoEmbeddings(encoder=encoder)
    with pytest.raises(TypeError, match="text must be a str, got NoneType"):
        embeddings.embed_query(None)
    with pytest.raises(TypeError, match=r"texts\[1\] must be a str, got int"):
        embeddings.embed_documents(["ok", 5])
