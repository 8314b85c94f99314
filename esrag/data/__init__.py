"""Readers for corpora (JSONL/CSV/Parquet/text folders/BEIR) and BEIR datasets."""

from __future__ import annotations

from esrag.data.beir import (
    BeirDataset,
    BeirDoc,
    doc_text,
    load_beir,
    load_qrels,
    load_queries,
)
from esrag.data.chunking import chunk_text
from esrag.data.corpus import CorpusFormat, CorpusSpec, Document, detect_format, read_corpus
from esrag.data.errors import DataError

__all__ = [
    "BeirDataset",
    "BeirDoc",
    "CorpusFormat",
    "CorpusSpec",
    "DataError",
    "Document",
    "chunk_text",
    "detect_format",
    "doc_text",
    "load_beir",
    "load_qrels",
    "load_queries",
    "read_corpus",
]
