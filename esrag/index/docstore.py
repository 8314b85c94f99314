"""Documents and metadata per row, with an inverted index for metadata filters.

Persisted as JSON Lines (one ``{"id", "text", "metadata"}`` object per row, in row order).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["DocStore", "validate_filter"]

_OPERATORS = ("$eq", "$in")


def _key(value: Any) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False)


def validate_filter(filter: Mapping[str, Any]) -> dict[str, list[str]]:
    """Normalise a filter to ``{field: [accepted value keys]}``.

    ``{"f": v}`` and ``{"f": {"$eq": v}}`` mean equality; ``{"f": [v1, v2]}`` and
    ``{"f": {"$in": [v1, v2]}}`` mean any of; several fields are combined with AND.
    """
    if not isinstance(filter, Mapping):
        raise TypeError(f"filter must be a dict of metadata field -> value, got {filter!r}")
    out: dict[str, list[str]] = {}
    for field, cond in filter.items():
        if not isinstance(field, str):
            raise TypeError(f"filter field names must be str, got {field!r}")
        if isinstance(cond, Mapping):
            if len(cond) != 1 or next(iter(cond)) not in _OPERATORS:
                raise ValueError(
                    f"filter[{field!r}] = {cond!r}: supported operators are "
                    f"{', '.join(_OPERATORS)} (one per field)"
                )
            op, arg = next(iter(cond.items()))
            if op == "$in":
                if isinstance(arg, (str, bytes)) or not isinstance(arg, Sequence):
                    raise ValueError(f"filter[{field!r}]['$in'] must be a list, got {arg!r}")
                out[field] = [_key(v) for v in arg]
            else:
                out[field] = [_key(arg)]
        elif isinstance(cond, (list, tuple)):
            out[field] = [_key(v) for v in cond]
        else:
            out[field] = [_key(cond)]
    return out


class DocStore:
    """Row-aligned ids, texts and metadata; ``None`` id marks a deleted row."""

    def __init__(self) -> None:
        self.ids: list[str | None] = []
        self.texts: list[str] = []
        self.metadatas: list[dict[str, Any] | None] = []  # None: no metadata (saves memory)
        self.row_of: dict[str, int] = {}
        self._inverted: dict[str, dict[str, set[int]]] = {}

    def __len__(self) -> int:
        return len(self.row_of)

    def append(self, doc_id: str, text: str, metadata: dict[str, Any]) -> int:
        row = len(self.ids)
        self.ids.append(doc_id)
        self.texts.append(text)
        self.metadatas.append(metadata or None)
        self.row_of[doc_id] = row
        for field, value in metadata.items():
            self._inverted.setdefault(field, {}).setdefault(_key(value), set()).add(row)
        return row

    def remove(self, doc_id: str) -> int:
        """Forget ``doc_id``; returns its (now dead) row."""
        row = self.row_of.pop(doc_id)
        for field, value in (self.metadatas[row] or {}).items():
            self._inverted[field][_key(value)].discard(row)
        self.ids[row] = None
        self.texts[row] = ""
        self.metadatas[row] = None
        return row

    def metadata(self, row: int) -> dict[str, Any]:
        """A copy of the metadata of ``row``."""
        return dict(self.metadatas[row] or {})

    def known_fields(self) -> list[str]:
        return sorted(self._inverted)

    def matching_rows(self, filter: Mapping[str, Any]) -> np.ndarray:
        """Sorted live rows whose metadata satisfies ``filter``; unknown field → ValueError."""
        spec = validate_filter(filter)
        result: set[int] | None = None
        for field, keys in spec.items():
            values = self._inverted.get(field)
            if values is None:
                known = ", ".join(repr(f) for f in self.known_fields()) or "none"
                raise ValueError(
                    f"unknown filter field {field!r}: no document has it (known fields: {known})"
                )
            rows: set[int] = set()
            for key in keys:
                rows |= values.get(key, set())
            result = rows if result is None else result & rows
            if not result:
                break
        if result is None:  # empty filter: every live row
            result = set(self.row_of.values())
        return np.array(sorted(result), dtype=np.int64)

    # ---------------------------------------------------------------- storage
    def write(self, path: Path, rows: np.ndarray) -> None:
        with open(path, "w", encoding="utf-8") as handle:
            for row in rows.tolist():
                record = {
                    "id": self.ids[row],
                    "text": self.texts[row],
                    "metadata": self.metadatas[row] or {},
                }
                handle.write(json.dumps(record, ensure_ascii=False) + "\n")

    def _read_line(self, path: Path, line_no: int, line: str) -> None:
        try:
            record = json.loads(line)
            doc_id, text, metadata = record["id"], record["text"], record["metadata"]
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"{path}, line {line_no}: bad document record ({exc})") from None
        if not isinstance(doc_id, str) or not isinstance(text, str) or not isinstance(metadata, dict):
            raise ValueError(f"{path}, line {line_no}: bad document record (wrong field types)")
        if doc_id in self.row_of:
            raise ValueError(f"{path}, line {line_no}: duplicate document id {doc_id!r}")
        self.append(doc_id, text, metadata)

    @classmethod
    def read(cls, path: Path, *, count: int) -> DocStore:
        store = cls()
        try:
            with open(path, encoding="utf-8") as handle:
                for line_no, line in enumerate(handle, start=1):
                    store._read_line(path, line_no, line)
        except (OSError, UnicodeDecodeError) as exc:
            raise ValueError(f"{path}: cannot read documents ({exc})") from None
        if len(store.ids) != count or len(store) != count:
            raise ValueError(f"{path}: expected {count} documents, found {len(store.ids)}")
        return store
