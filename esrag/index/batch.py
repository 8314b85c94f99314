r"""A batch of documents to insert, checked as a whole before anything is stored.

:class:`DocBatch` is the unit every write goes through: ids, texts, metadata and both
vectors of ``n`` documents, already validated and L2-normalised, so inserting it cannot fail
half-way on bad input.

What a document may hold (checked by :func:`check_ids`, :func:`check_doc_texts` and
:func:`check_metadatas` for the whole call, before the first vector is stored):

* ids and texts are ``str`` that can be written as UTF-8 (a lone surrogate such as the
  one a JSON ``"\ud800"`` escape gives is refused, naming its position);
* metadata is a dict with ``str`` keys whose values JSON can store: ``None``, ``bool``,
  ``int``, finite ``float``, ``str`` (UTF-8 writable), and lists or dicts of those. Two
  conversions are applied, the same everywhere: a numpy scalar becomes the Python scalar
  (``.item()``: ``np.int64(3)`` → ``3``), a ``datetime.date`` or ``datetime.datetime``
  (pandas ``Timestamp`` included) becomes its ISO-8601 string (``"2024-05-01"``,
  ``"2024-05-01T12:30:00"``); a tuple is stored as a list. NaN, infinities and every
  other type are refused with an error naming ``metadatas[i]['key']``.
"""

from __future__ import annotations

import datetime
import math
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from esrag._arrays import l2_normalize
from esrag._progress import progress
from esrag.validation import check_texts, check_vectors

__all__ = [
    "DocBatch",
    "RawPart",
    "check_doc_texts",
    "check_ids",
    "check_metadatas",
    "checked_batches",
    "concat_batches",
    "concat_query",
    "encoded_parts",
    "json_value",
    "vector_parts",
]

RawPart = tuple[list[str], list[str], list[dict[str, Any]], Any, Any, Any]
"""``(ids, texts, metadatas, coarse source vectors, fine vectors, query-layer vectors or None)``
of a batch, unchecked (the last: the documents' layer-k vectors that fit a shallow-query map)."""

_VECTOR_STEP = 65_536


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
        else:
            _check_utf8(doc_id, f"ids[{position}]")
        if doc_id in seen:
            raise ValueError(
                f"duplicate id {doc_id!r} at positions {seen[doc_id]} and {position} in one call"
            )
        seen[doc_id] = position
        out.append(doc_id)
    return out


def _check_utf8(text: str, where: str) -> str:
    """``text`` unchanged when it can be written as UTF-8; ``ValueError`` naming ``where`` otherwise."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        bad = text[exc.start : exc.end]
        raise ValueError(
            f"{where} cannot be written as UTF-8: character {exc.start} is {bad!r} "
            "(a lone surrogate, e.g. from a JSON '\\ud800' escape); fix or drop it"
        ) from None
    return text


def check_doc_texts(texts: Any) -> list[str]:
    """Document texts: a list of str that can all be written as UTF-8 (errors name ``texts[i]``)."""
    texts = check_texts(texts)
    for position, text in enumerate(texts):
        _check_utf8(text, f"texts[{position}]")
    return texts


def json_value(value: Any, where: str) -> Any:
    """``value`` as JSON can store it, by the rule of the module docstring; errors name ``where``."""
    if isinstance(value, np.datetime64):
        value = str(np.datetime_as_string(value))  # .item() of a ns datetime64 is an int
    elif isinstance(value, np.generic):
        value = value.item()
    if value is None or isinstance(value, (bool, int)):
        return value
    if isinstance(value, str):
        return _check_utf8(value, where)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{where} is {value!r}: JSON cannot store NaN or infinity")
        return value
    if isinstance(value, (datetime.date, datetime.datetime)):
        return value.isoformat()
    if isinstance(value, (list, tuple)):
        return [json_value(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, dict):
        return _json_object(value, where)
    raise TypeError(
        f"{where} is a {type(value).__name__} ({value!r:.60}), which JSON cannot store: use str, int, "
        "float, bool, None, or a list or dict of those (numpy scalars and dates are converted)"
    )


def _json_object(meta: dict[Any, Any], where: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in meta.items():
        if not isinstance(key, str):
            raise TypeError(f"{where} has a non-str key {key!r}")
        _check_utf8(key, f"{where} key {key!r}")
        out[key] = json_value(value, f"{where}[{key!r}]")
    return out


def check_metadatas(metadatas: Sequence[dict[str, Any] | None] | None, n: int) -> list[dict[str, Any]]:
    """``n`` metadata dicts (``None`` entries become ``{}``), converted and checked by the rule
    of the module docstring; errors name ``metadatas[i]['key']``.
    """
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
        out.append(_json_object(meta, f"metadatas[{position}]"))
    return out


@dataclass(frozen=True, eq=False)
class DocBatch:
    """``n`` checked documents: ids, texts, metadata, L2-normalised source and fine vectors."""

    ids: list[str]
    texts: list[str]
    metadatas: list[dict[str, Any]]
    source: np.ndarray
    fine: np.ndarray
    query: np.ndarray | None = None
    """(n, hidden) query-layer vectors of the documents, only while a shallow-query map is fitted."""

    def __len__(self) -> int:
        return len(self.ids)

    @classmethod
    def checked(
        cls,
        ids: list[str],
        texts: list[str],
        metadatas: list[dict[str, Any]],
        source: Any,
        fine: Any,
        *,
        source_dim: int | None,
        fine_dim: int | None,
        query: Any = None,
    ) -> DocBatch:
        """Validate shapes (``source_dim``/``fine_dim`` when known) and normalise the vectors."""
        n = len(ids)
        source = check_vectors("coarse_source", source, source_dim, n)
        fine = check_vectors("fine", fine, fine_dim, n)
        if query is not None:
            query = l2_normalize(check_vectors("query_source", query, None, n))
        return cls(ids, texts, metadatas, l2_normalize(source), l2_normalize(fine), query)


def concat_batches(batches: Sequence[DocBatch]) -> tuple[np.ndarray, np.ndarray]:
    """The ``(source, fine)`` vectors of several batches, stacked."""
    return np.concatenate([b.source for b in batches]), np.concatenate([b.fine for b in batches])


def concat_query(batches: Sequence[DocBatch]) -> np.ndarray | None:
    """The query-layer vectors of several batches, stacked (``None`` unless every batch has them)."""
    if not batches or any(b.query is None for b in batches):
        return None
    return np.concatenate([b.query for b in batches if b.query is not None])


def encoded_parts(
    encode: Callable[[list[str]], tuple[np.ndarray, ...]],
    ids: list[str],
    texts: list[str],
    metadatas: list[dict[str, Any]],
    batch_size: int,
    show_progress_bar: bool | None,
) -> Iterator[RawPart]:
    """Encode ``texts`` ``batch_size`` at a time (with a progress bar), lazily, as raw parts.

    ``encode`` returns ``(source, fine)`` or ``(source, fine, query-layer vectors)``.
    """
    bar = progress(total=len(texts), desc="Indexing", show=show_progress_bar, unit="doc")
    try:
        for start in range(0, len(texts), batch_size):
            stop = start + batch_size
            source, fine, *query = encode(texts[start:stop])
            bar.update(len(texts[start:stop]))
            yield (
                ids[start:stop],
                texts[start:stop],
                metadatas[start:stop],
                source,
                fine,
                next(iter(query), None),
            )
    finally:
        bar.close()


def vector_parts(
    coarse_source: Any,
    fine: Any,
    ids: Sequence[str | None] | None,
    texts: Sequence[str] | None,
    metadatas: Sequence[dict[str, Any] | None] | None,
    query: Any | None = None,
    *,
    dims: tuple[int | None, int | None] = (None, None),
) -> tuple[list[str], Iterator[RawPart]]:
    """Check precomputed vectors and their documents as a whole (widths ``dims`` when known);
    returns the ids and the input cut into raw parts of bounded size.
    """
    source = check_vectors("coarse_source", coarse_source, dims[0])
    n = source.shape[0]
    fine_arr = check_vectors("fine", fine, dims[1], n)
    texts_list = check_doc_texts(texts) if texts is not None else [""] * n
    if len(texts_list) != n:
        raise ValueError(f"got {len(texts_list)} texts for {n} vectors")
    doc_ids = check_ids(ids, n)
    metas = check_metadatas(metadatas, n)

    def parts() -> Iterator[RawPart]:
        for s in range(0, n, _VECTOR_STEP):
            part = slice(s, s + _VECTOR_STEP)
            q = None if query is None else query[part]
            yield doc_ids[part], texts_list[part], metas[part], source[part], fine_arr[part], q

    return doc_ids, parts()


def checked_batches(parts: Iterable[RawPart]) -> Iterator[DocBatch]:
    """Check each raw part as a :class:`DocBatch`; every batch must have the first one's widths."""
    dims: tuple[int, int] | None = None
    for ids, texts, metadatas, source, fine, query in parts:
        batch = DocBatch.checked(
            ids,
            texts,
            metadatas,
            source,
            fine,
            source_dim=None if dims is None else dims[0],
            fine_dim=None if dims is None else dims[1],
            query=query,
        )
        dims = dims or (batch.source.shape[1], batch.fine.shape[1])
        yield batch
