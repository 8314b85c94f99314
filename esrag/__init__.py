"""esrag: cheap, accurate retrieval for RAG with Espresso Sentence Embeddings (ESE)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from esrag._lazy import lazy_getattr

__version__ = "0.1.0"

__all__ = [
    "CascadeIndex",
    "CascadeVectorStore",
    "EspressoEmbeddings",
    "EspressoEncoder",
    "View",
    "__version__",
]

_EXPORTS = {
    "EspressoEncoder": "esrag.encoder",
    "View": "esrag.encoder",
    "EspressoEmbeddings": "esrag.langchain.embeddings",
    "CascadeIndex": "esrag.index",
    "CascadeVectorStore": "esrag.langchain.vectorstore",
}

if TYPE_CHECKING:  # pragma: no cover
    from esrag.encoder import EspressoEncoder, View
    from esrag.index import CascadeIndex
    from esrag.langchain.embeddings import EspressoEmbeddings
    from esrag.langchain.vectorstore import CascadeVectorStore


__getattr__ = lazy_getattr("esrag", _EXPORTS, globals())
