"""Readers for tables (JSONL/JSON/CSV/TSV/Parquet), corpora (tables, text folders, BEIR) and BEIR datasets."""

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
from esrag.data.tables import Position, Row, TableFormat, read_table, table_format

__all__ = [
    "BeirDataset",
    "BeirDoc",
    "CorpusFormat",
    "CorpusSpec",
    "DataError",
    "Document",
    "Position",
    "Row",
    "TableFormat",
    "chunk_text",
    "detect_format",
    "doc_text",
    "load_beir",
    "load_qrels",
    "load_queries",
    "read_corpus",
    "read_table",
    "table_format",
]
