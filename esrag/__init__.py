"""esrag: cheap, accurate retrieval for RAG with Espresso Sentence Embeddings (ESE)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

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


def __getattr__(name: str) -> Any:
    """Import the heavy parts (torch, faiss) only when first used."""
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'esrag' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
