"""Documents and metadata per row, with an inverted index for metadata filters.

Persisted as JSON Lines (one ``{"id", "text", "metadata"}`` object per row, in row order).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from esrag.index.batch import json_value

__all__ = ["DocStore", "unknown_field_error", "validate_filter"]

logger = logging.getLogger(__name__)

_OPERATORS = ("$eq", "$in")
_KINDS = {'"': "str", "t": "bool", "f": "bool", "n": "null", "[": "list", "{": "dict"}


def _kind(key: str) -> str:
    """The JSON type of a value from its key (its JSON text)."""
    return _KINDS.get(key[:1], "number")


def _key(value: Any) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False)


def _value_key(value: Any, where: str) -> str:
    """The key of a filter value, converted like stored metadata (numpy scalars, dates)."""
    return _key(json_value(value, where))


def validate_filter(filter: Mapping[str, Any]) -> dict[str, list[str]]:
    """Normalise a filter to ``{field: [accepted value keys]}``.

    ``{"f": v}`` and ``{"f": {"$eq": v}}`` mean equality; ``{"f": [v1, v2]}`` and
    ``{"f": {"$in": [v1, v2]}}`` mean any of; several fields are combined with AND. Values
    are converted by the rule stored metadata follows (:mod:`esrag.index.batch`), so
    ``np.int64(3)`` matches ``3`` and ``datetime.date(2024, 5, 1)`` matches ``"2024-05-01"``.
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
                out[field] = [_value_key(v, f"filter[{field!r}]['$in']") for v in arg]
            else:
                out[field] = [_value_key(arg, f"filter[{field!r}]['$eq']")]
        elif isinstance(cond, (list, tuple)):
            out[field] = [_value_key(v, f"filter[{field!r}]") for v in cond]
        else:
            out[field] = [_value_key(cond, f"filter[{field!r}]")]
    return out


def unknown_field_error(field: str, known: Sequence[str]) -> ValueError:
    """The error for a filter on a field no stored document has (``known``: the fields some have)."""
    names = ", ".join(repr(f) for f in known) or "none"
    return ValueError(f"unknown filter field {field!r}: no document has it (known fields: {names})")


class DocStore:
    """Row-aligned texts and metadata, with an inverted index of metadata values for filters.

    Rows are numbered by the caller (the :class:`~esrag.index.rows.RowMap` allocates them);
    the store holds no document ids. A removed row keeps an empty text and no metadata.
    """

    def __init__(self) -> None:
        self._texts: list[str] = []
        self._metadatas: list[dict[str, Any] | None] = []  # None: no metadata (saves memory)
        self._inverted: dict[str, dict[str, set[int]]] = {}

    def __len__(self) -> int:
        """Rows held, removed ones included."""
        return len(self._texts)

    def append(self, text: str, metadata: dict[str, Any]) -> int:
        """Store one document in the next row; returns the row."""
        row = len(self._texts)
        self._texts.append(text)
        self._metadatas.append(metadata or None)
        for field, value in metadata.items():
            self._inverted.setdefault(field, {}).setdefault(_key(value), set()).add(row)
        return row

    def remove(self, row: int) -> None:
        """Forget the text and metadata of ``row``."""
        for field, value in (self._metadatas[row] or {}).items():
            self._inverted[field][_key(value)].discard(row)
        self._texts[row] = ""
        self._metadatas[row] = None

    def text(self, row: int) -> str:
        """The text of ``row``."""
        return self._texts[row]

    def texts(self, rows: np.ndarray) -> list[str]:
        """The texts of ``rows``, in that order."""
        return [self._texts[r] for r in np.asarray(rows).tolist()]

    def metadata(self, row: int) -> dict[str, Any]:
        """A copy of the metadata of ``row``."""
        return dict(self._metadatas[row] or {})

    def known_fields(self) -> list[str]:
        """Metadata field names that some stored document has."""
        return sorted(self._inverted)

    def matching_rows(self, filter: Mapping[str, Any], live: np.ndarray) -> np.ndarray:
        """Sorted rows whose metadata satisfies ``filter``; unknown field → ValueError.

        ``live``: the live rows, returned for an empty filter.
        """
        spec = validate_filter(filter)
        for field in spec:  # all of them, whatever the others match
            if field not in self._inverted:
                raise unknown_field_error(field, self.known_fields())
        result: set[int] | None = None
        for field, keys in spec.items():
            values = self._inverted[field]
            rows: set[int] = set()
            for key in keys:
                rows |= values.get(key, set())
            if not rows:
                _warn_kinds(field, keys, values)
            result = rows if result is None else result & rows
            if not result:
                break
        if result is None:  # empty filter: every live row
            return np.asarray(live, dtype=np.int64)
        return np.array(sorted(result), dtype=np.int64)

    # ---------------------------------------------------------------- storage
    def write(self, path: Path, rows: np.ndarray, ids: Sequence[str]) -> None:
        """Write ``rows`` (with their document ``ids``) as JSON Lines, in that order."""
        with open(path, "w", encoding="utf-8") as handle:
            for row, doc_id in zip(rows.tolist(), ids, strict=True):
                record = {"id": doc_id, "text": self._texts[row], "metadata": self._metadatas[row] or {}}
                handle.write(json.dumps(record, ensure_ascii=False) + "\n")

    @classmethod
    def read(cls, path: Path, *, count: int) -> tuple[DocStore, list[str]]:
        """``(store, ids)`` of a file written by :meth:`write`; errors name the file and line."""
        store, ids, seen = cls(), [], set()
        try:
            with open(path, encoding="utf-8") as handle:
                for line_no, line in enumerate(handle, start=1):
                    doc_id, text, metadata = _parse_record(path, line_no, line)
                    if doc_id in seen:
                        raise ValueError(f"{path}, line {line_no}: duplicate document id {doc_id!r}")
                    seen.add(doc_id)
                    ids.append(doc_id)
                    store.append(text, metadata)
        except (OSError, UnicodeDecodeError) as exc:
            raise ValueError(f"{path}: cannot read documents ({exc})") from None
        if len(ids) != count:
            raise ValueError(f"{path}: expected {count} documents, found {len(ids)}")
        return store, ids


def _parse_record(path: Path, line_no: int, line: str) -> tuple[str, str, dict[str, Any]]:
    try:
        record = json.loads(line)
        doc_id, text, metadata = record["id"], record["text"], record["metadata"]
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{path}, line {line_no}: bad document record ({exc})") from None
    if not isinstance(doc_id, str) or not isinstance(text, str) or not isinstance(metadata, dict):
        raise ValueError(f"{path}, line {line_no}: bad document record (wrong field types)")
    return doc_id, text, metadata


def _warn_kinds(field: str, keys: list[str], values: Mapping[str, set[int]]) -> None:
    """Log why a filter on ``field`` matches nothing when no stored value has its type."""
    stored = {_kind(k) for k, rows in values.items() if rows}
    wanted = {_kind(k) for k in keys}
    if stored and not stored & wanted:
        example = next(k for k, rows in values.items() if rows)
        logger.warning(
            "filter on %r matches no document: it asks for %s %s, the stored values are %s (e.g. %s)",
            field,
            "/".join(sorted(wanted)),
            ", ".join(keys),
            "/".join(sorted(stored)),
            example,
        )
