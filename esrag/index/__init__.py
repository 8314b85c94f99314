"""Two-stage cascade index: coarse FAISS shortlist over shallow low-dimension vectors, exact
rerank with deep full-dimension vectors; safe persistence.
"""

from __future__ import annotations

from esrag.errors import IndexFormatError, ModelMismatchError
from esrag.index.cascade import CascadeIndex
from esrag.index.config import CascadeConfig, FineDType, SearchMode, Transform
from esrag.index.format import Manifest, is_index_folder
from esrag.index.results import IndexedDocument, SearchResult
from esrag.index.transforms import FittedTransform, fit_transform

__all__ = [
    "CascadeConfig",
    "CascadeIndex",
    "FineDType",
    "FittedTransform",
    "IndexFormatError",
    "IndexedDocument",
    "Manifest",
    "ModelMismatchError",
    "SearchMode",
    "SearchResult",
    "Transform",
    "fit_transform",
    "is_index_folder",
]
