"""Readers for corpora, BEIR datasets and training pairs."""

from __future__ import annotations

from esrag.data.beir import BeirDataset, BeirDoc, doc_text, load_beir, load_qrels, load_queries
from esrag.data.errors import DataError

__all__ = [
    "BeirDataset",
    "BeirDoc",
    "DataError",
    "doc_text",
    "load_beir",
    "load_qrels",
    "load_queries",
]
