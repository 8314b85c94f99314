"""Stream documents from a corpus: JSONL, JSON, CSV/TSV, Parquet, a folder of .txt/.md files, or BEIR.

Tabular files are read with :func:`esrag.data.tables.read_table` (one rule per extension,
the same as for training data); every reader yields :class:`Document` records one at a time
(memory bounded by one record or one Parquet batch; a top-level JSON array is read whole),
and every error names the file, the line (or row, or JSON array element) and the field.
"""

from __future__ import annotations

import enum
import hashlib
import json
import logging
import math
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from esrag.data._lines import iter_text_lines
from esrag.data.beir import doc_text
from esrag.data.chunking import chunk_text
from esrag.data.errors import DataError
from esrag.data.tables import TABLE_SUFFIXES, Position, TableFormat, read_table
from esrag.validation import is_int

__all__ = ["CorpusFormat", "CorpusSpec", "Document", "content_hash", "detect_format", "read_corpus"]

log = logging.getLogger(__name__)

Scalar = str | int | float | bool


class CorpusFormat(str, enum.Enum):
    """How a corpus is laid out: a tabular file (see :mod:`esrag.data.tables`), a folder of
    text files, or a BEIR folder.
    """

    JSONL = "jsonl"
    JSON = "json"
    CSV = "csv"
    TSV = "tsv"
    PARQUET = "parquet"
    FOLDER = "folder"
    BEIR = "beir"


@dataclass(frozen=True)
class Document:
    """One document (or chunk) to index: a stable id, the text to encode, flat metadata."""

    id: str
    text: str
    metadata: dict[str, Scalar] = field(default_factory=dict)
    source: str = ""  # where it came from ("file:line", see Position), for messages

    @property
    def content_hash(self) -> str:
        """SHA-256 of text + metadata: what incremental builds compare."""
        return content_hash(self.text, self.metadata)


def content_hash(text: str, metadata: Mapping[str, Any]) -> str:
    """SHA-256 of a document's text and metadata (key order irrelevant)."""
    payload = json.dumps([text, dict(metadata)], sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class CorpusSpec:
    """How to read a corpus. ``id_field=None`` means "id", else "_id"; ``metadata_fields=None``
    keeps every other scalar field (a nested ``metadata`` object is flattened into it).
    """

    id_field: str | None = None
    text_field: str = "text"
    title_field: str | None = "title"
    metadata_fields: tuple[str, ...] | None = None
    chunk_size: int = 1000
    chunk_overlap: int = 200
    extensions: tuple[str, ...] = (".txt", ".md")


_SUFFIXES = {suffix: CorpusFormat(fmt.value) for suffix, fmt in TABLE_SUFFIXES.items()}


def detect_format(path: str | os.PathLike[str]) -> CorpusFormat:
    """Guess the corpus format from the path (a BEIR folder has ``corpus.jsonl``)."""
    path = Path(path)
    if path.is_dir():
        return CorpusFormat.BEIR if (path / "corpus.jsonl").is_file() else CorpusFormat.FOLDER
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file or folder")
    fmt = _SUFFIXES.get(path.suffix.lower())
    if fmt is None:
        raise ValueError(
            f"{path}: unknown corpus format {path.suffix!r}; expected a folder or "
            f"one of {', '.join(sorted(_SUFFIXES))} (or pass the format)"
        )
    return fmt


def read_corpus(
    path: str | os.PathLike[str],
    spec: CorpusSpec | None = None,
    fmt: CorpusFormat | str | None = None,
) -> Iterator[Document]:
    """Stream :class:`Document` records from ``path``; ids are checked to be unique."""
    spec = spec or CorpusSpec()
    path = Path(path)
    fmt = CorpusFormat(fmt) if fmt is not None else detect_format(path)
    if fmt is CorpusFormat.FOLDER:
        items = _read_folder(path, spec)
    elif fmt is CorpusFormat.BEIR:
        items = _read_beir(path, spec)
    else:
        items = _read_table(path, spec, TableFormat(fmt.value))
    seen: dict[str, str] = {}
    count = 0
    for position, doc in items:
        if doc is None:
            continue
        if doc.id in seen:
            raise _error(
                position, f"duplicate id {doc.id!r} (first at {seen[doc.id]})", field=spec.id_field or "id"
            )
        seen[doc.id] = doc.source
        count += 1
        yield doc
    if count == 0:
        raise DataError(path, None, "the corpus has no documents")


def _error(position: Position, message: str, *, field: str | None = None) -> DataError:
    """A :class:`DataError` at ``position`` (a JSON array element is named by its index)."""
    if position.element is not None:
        message = f"{position.label}: {message}"
    return DataError(position.path, position.locator, message, field=field)


def _record_to_doc(rec: dict[str, Any], spec: CorpusSpec, position: Position) -> Document | None:
    id_field = spec.id_field or ("id" if "id" in rec or "_id" not in rec else "_id")
    raw_id = rec.get(id_field)
    keys = ", ".join(sorted(map(str, rec))) or "none"
    if raw_id is None or raw_id == "":
        raise _error(
            position, f"missing (the record has: {keys}); choose the id field with --id-field", field=id_field
        )
    if not (isinstance(raw_id, str) or is_int(raw_id)):
        raise _error(position, f"expected a string or int, got {type(raw_id).__name__}", field=id_field)
    text = rec.get(spec.text_field)
    if text is None:
        raise _error(
            position,
            f"missing (the record has: {keys}); choose the text field with --text-field",
            field=spec.text_field,
        )
    if not isinstance(text, str):
        raise _error(position, f"expected a string, got {type(text).__name__}", field=spec.text_field)
    title = rec.get(spec.title_field) if spec.title_field else None
    if title is not None and not isinstance(title, str):
        raise _error(position, f"expected a string, got {type(title).__name__}", field=spec.title_field)
    full = doc_text(title or "", text)
    if not full:
        log.warning("%s: empty text, document %r skipped", position, raw_id)
        return None
    used = {id_field, spec.text_field, spec.title_field}
    meta = _metadata(rec, spec, used, position)
    for name, value in (
        (id_field, raw_id),
        (spec.text_field, text),
        (spec.title_field, title),
        *meta.items(),
    ):
        _check_storable(value, name or "", position)
    return Document(str(raw_id), full, meta, str(position))


def _check_storable(value: Any, name: str, position: Position) -> None:
    """A value the index can write: UTF-8 writable text (no lone surrogate), finite numbers."""
    if isinstance(value, float) and not math.isfinite(value):
        raise _error(position, f"{value!r} is not a finite number (JSON cannot store it)", field=name)
    if not isinstance(value, str):
        return
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise _error(
            position,
            f"character {exc.start} is {value[exc.start : exc.end]!r}, a lone surrogate (e.g. from a "
            "JSON '\\ud800' escape) that cannot be written as UTF-8",
            field=name,
        ) from None


def _metadata(
    rec: dict[str, Any], spec: CorpusSpec, used: set[str | None], position: Position
) -> dict[str, Scalar]:
    if spec.metadata_fields is not None:
        meta: dict[str, Scalar] = {}
        for name in spec.metadata_fields:
            if name not in rec:
                raise _error(position, "missing metadata field", field=name)
            meta[name] = _scalar(rec[name], name, position)
        return meta
    flat: dict[str, Any] = {}
    nested = rec.get("metadata")
    if isinstance(nested, dict):
        flat.update(nested)
    flat.update({k: v for k, v in rec.items() if k not in used and k != "metadata"})
    return {k: v for k, v in flat.items() if isinstance(v, str | int | float | bool)}


def _scalar(value: Any, name: str, position: Position) -> Scalar:
    if isinstance(value, str | int | float | bool):
        return value
    raise _error(
        position, f"metadata must be a string, number or bool, got {type(value).__name__}", field=name
    )


_Item = tuple[Position, Document | None]


def _read_table(path: Path, spec: CorpusSpec, fmt: TableFormat) -> Iterator[_Item]:
    for row in read_table(path, fmt, require=(spec.text_field,)):
        yield row.position, _record_to_doc(row.values, spec, row.position)


def _read_beir(path: Path, spec: CorpusSpec) -> Iterator[_Item]:
    beir_spec = CorpusSpec(
        id_field="_id", text_field="text", title_field="title", metadata_fields=spec.metadata_fields
    )
    yield from _read_table(path / "corpus.jsonl", beir_spec, TableFormat.JSONL)


def _iter_files(root: Path, extensions: Sequence[str]) -> Iterable[Path]:
    exts = {e.lower() for e in extensions}
    return sorted(
        p
        for p in root.rglob("*")
        if p.is_file()
        and p.suffix.lower() in exts
        and not any(part.startswith(".") for part in p.relative_to(root).parts)
    )


def _read_folder(root: Path, spec: CorpusSpec) -> Iterator[_Item]:
    files = list(_iter_files(root, spec.extensions))
    if not files:
        raise DataError(root, None, f"no {'/'.join(spec.extensions)} files in the folder")
    for file in files:
        text = "\n".join(line for _n, line in iter_text_lines(file))
        rel = file.relative_to(root).as_posix()
        chunks = chunk_text(text, spec.chunk_size, spec.chunk_overlap)
        if not chunks:
            log.warning("%s: empty file, skipped", file)
            continue
        offset = 0
        for i, chunk in enumerate(chunks):
            pos = text.find(chunk, offset)
            offset = max(pos, offset)
            position = Position(file, i + 1, line=text.count("\n", 0, offset) + 1)
            meta: dict[str, Scalar] = {"source": rel, "chunk": i}
            yield position, Document(f"{rel}#{i}", chunk, meta, str(position))
