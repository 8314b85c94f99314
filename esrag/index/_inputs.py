"""Validation of user input to the index (ids, texts, metadata, vectors, search arguments)."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from esrag.index.config import SearchMode

__all__ = [
    "check_batch_size",
    "check_dim",
    "check_ids",
    "check_metadatas",
    "check_search_args",
    "check_strings",
    "check_texts",
    "check_vectors",
]


def check_strings(values: Any, name: str) -> list[str]:
    """``values`` as a list of str; errors name ``name`` and the offending position."""
    if isinstance(values, str):
        raise TypeError(f"{name} must be a list of strings, not a single string")
    if not isinstance(values, Iterable):
        raise TypeError(f"{name} must be a list of strings, got {type(values).__name__}")
    values = list(values)
    for position, value in enumerate(values):
        if not isinstance(value, str):
            raise TypeError(f"{name}[{position}] must be a str, got {type(value).__name__}")
    return values


def check_texts(texts: Any) -> list[str]:
    return check_strings(texts, "texts")


def check_ids(ids: Sequence[str | None] | None, n: int) -> list[str]:
    """Ids for ``n`` items (``None`` entries get a fresh uuid4); duplicates are an error."""
    if ids is None:
        return [str(uuid.uuid4()) for _ in range(n)]
    if isinstance(ids, str):
        raise TypeError("ids must be a list of strings, not a single string")
    if not isinstance(ids, Iterable):
        raise TypeError(f"ids must be a list of strings, got {type(ids).__name__}")
    ids = list(ids)
    if len(ids) != n:
        raise ValueError(f"got {len(ids)} ids for {n} documents")
    out: list[str] = []
    seen: dict[str, int] = {}
    for position, doc_id in enumerate(ids):
        if doc_id is None:
            doc_id = str(uuid.uuid4())
        elif not isinstance(doc_id, str):
            raise TypeError(f"ids[{position}] must be a str, got {type(doc_id).__name__}")
        if doc_id in seen:
            raise ValueError(
                f"duplicate id {doc_id!r} at positions {seen[doc_id]} and {position} in one call"
            )
        seen[doc_id] = position
        out.append(doc_id)
    return out


def check_metadatas(metadatas: Sequence[dict[str, Any] | None] | None, n: int) -> list[dict[str, Any]]:
    if metadatas is None:
        return [{} for _ in range(n)]
    if isinstance(metadatas, (str, dict)) or not isinstance(metadatas, Iterable):
        raise TypeError(f"metadatas must be a list of dicts, got {type(metadatas).__name__}")
    metadatas = list(metadatas)
    if len(metadatas) != n:
        raise ValueError(f"got {len(metadatas)} metadatas for {n} documents")
    out = []
    for position, meta in enumerate(metadatas):
        if meta is None:
            meta = {}
        if not isinstance(meta, dict):
            raise TypeError(f"metadatas[{position}] must be a dict, got {type(meta).__name__}")
        for key in meta:
            if not isinstance(key, str):
                raise TypeError(f"metadatas[{position}] has a non-str key {key!r}")
        out.append(dict(meta))
    return out


def check_vectors(name: str, vectors: Any, dim: int | None, n: int | None = None) -> np.ndarray:
    """A finite 2-D float32 array with ``dim`` columns (when known) and ``n`` rows (when given)."""
    arr = np.asarray(vectors, dtype=np.float32)
    if arr.ndim == 1 and arr.size:
        arr = arr[None, :]
    if arr.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array (n, dim), got shape {arr.shape}")
    check_dim(name, arr, dim)
    if n is not None and arr.shape[0] != n:
        raise ValueError(f"{name} has {arr.shape[0]} rows, expected {n}")
    for start in range(0, arr.shape[0], 65_536):  # chunked: no full-size temporary
        if not np.isfinite(arr[start : start + 65_536]).all():
            raise ValueError(f"{name} contains NaN or infinite values")
    return arr


def check_dim(name: str, arr: np.ndarray, dim: int | None) -> None:
    """``arr`` (2-D) has ``dim`` columns, when ``dim`` is known."""
    if dim is not None and arr.shape[1] != dim:
        raise ValueError(f"{name} has {arr.shape[1]} dims, the index expects {dim} (shape (n, {dim}))")


def check_batch_size(batch_size: Any) -> int:
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)):
        raise TypeError(f"batch_size must be an int >= 1, got {batch_size!r}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
    return int(batch_size)


def check_search_args(k: Any, shortlist: Any, mode: Any) -> tuple[int, int, SearchMode]:
    for name, value in (("k", k), ("shortlist", shortlist)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise TypeError(f"{name} must be an int, got {value!r}")
    if k <= 0:
        raise ValueError(f"k must be >= 1, got {k}")
    if shortlist < k:
        raise ValueError(f"shortlist ({shortlist}) must be >= k ({k})")
    try:
        mode = SearchMode(mode)
    except ValueError:
        choices = ", ".join(repr(m.value) for m in SearchMode)
        raise ValueError(f"mode must be one of {choices}, got {mode!r}") from None
    return int(k), int(shortlist), mode
