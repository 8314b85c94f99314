"""LangChain integrations: Embeddings and a cascade VectorStore."""

__all__ = []
