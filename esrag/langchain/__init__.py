"""LangChain integrations: Embeddings and a cascade VectorStore."""
