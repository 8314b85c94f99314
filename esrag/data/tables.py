"""One reader of tabular files (corpora and training data alike): rows with their positions.

:func:`read_table` yields :class:`Row` values (a dict of column -> value and the row's
:class:`Position`). The format follows the file's extension, one rule each:

``.jsonl``, ``.ndjson``
    JSON Lines: one JSON object per non-blank line. Streamed.
``.json``
    Decided by the file's first non-blank character: ``[`` means one top-level JSON array
    of objects (read whole; rows are named ``element [i]``, 0-based, without a line);
    anything else is read as JSON Lines. A file holding one other JSON value (``42``) is
    an error naming its type.
``.csv``, ``.tsv``
    A header row, then one record per row (comma or tab separated, ``"``-quoting; a quoted
    cell may span lines and the record is positioned at its first line). Header names are
    stripped and must be unique. Every record has exactly as many cells as the header,
    fewer or more is an error (``FILE:LINE: expected N columns like the header, got M``).
    Cells are strings, never converted (an empty cell is ``""``). Records whose cells are
    all blank are skipped like blank lines. Streamed.
``.parquet``, ``.pq``
    Read with pyarrow in batches of 1024 rows; values are pyarrow's Python values (nulls
    are ``None``). Streamed.

For every format: text is UTF-8 (a leading BOM is dropped; other bytes raise a
:class:`DataError` naming file:line), blank lines are skipped, and a file without a single
row is an error (``the file is empty (...)``). Positions give the 1-based first line of a
row in JSON Lines and CSV/TSV, the 1-based row number in Parquet, and the element index in
a JSON array; :attr:`Position.locator` is the number messages print after ``FILE:``.
"""

from __future__ import annotations

import enum
import json
import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

from esrag.data._lines import iter_csv_rows, iter_jsonl, iter_text_lines, read_utf8
from esrag.data.errors import DataError, where

__all__ = ["TABLE_SUFFIXES", "Position", "Row", "TableFormat", "read_table", "table_format"]

_PARQUET_BATCH = 1024


class TableFormat(str, enum.Enum):
    """A tabular file format; see the module docstring for each one's rule."""

    JSONL = "jsonl"
    JSON = "json"
    CSV = "csv"
    TSV = "tsv"
    PARQUET = "parquet"

    @property
    def text_cells(self) -> bool:
        """Every cell is a string (CSV/TSV): numbers must be parsed where one is expected."""
        return self in (TableFormat.CSV, TableFormat.TSV)


TABLE_SUFFIXES: Mapping[str, TableFormat] = MappingProxyType(
    {
        ".jsonl": TableFormat.JSONL,
        ".ndjson": TableFormat.JSONL,
        ".json": TableFormat.JSON,
        ".csv": TableFormat.CSV,
        ".tsv": TableFormat.TSV,
        ".parquet": TableFormat.PARQUET,
        ".pq": TableFormat.PARQUET,
    }
)


@dataclass(frozen=True, slots=True)
class Position:
    """Where a row came from: the file, its 1-based ``row`` among the file's rows, and the
    first file ``line`` (JSON Lines, CSV/TSV) or the 0-based ``element`` index (JSON array).
    """

    path: Path
    row: int
    line: int | None = None
    element: int | None = None

    @property
    def locator(self) -> int | None:
        """The ``N`` of ``FILE:N`` in messages: the line, the Parquet row, or None for a JSON
        array element (its :attr:`label` names it).
        """
        if self.line is not None:
            return self.line
        return None if self.element is not None else self.row

    @property
    def label(self) -> str:
        """``element [i]`` for a JSON array element, else ``row N``."""
        return f"element [{self.element}]" if self.element is not None else f"row {self.row}"

    def __str__(self) -> str:
        """``FILE:N``, or ``FILE: element [i]`` for a JSON array element."""
        text = where(self.path, self.locator)
        return f"{text}: {self.label}" if self.element is not None else text


@dataclass(frozen=True, slots=True)
class Row:
    """One row of a table: column -> value, and where it came from."""

    values: dict[str, Any]
    position: Position


def table_format(path: str | os.PathLike[str]) -> TableFormat:
    """The :class:`TableFormat` of ``path`` from its extension; :class:`DataError` otherwise."""
    path = Path(path)
    fmt = TABLE_SUFFIXES.get(path.suffix.lower())
    if fmt is None:
        raise DataError(
            path,
            None,
            f"unsupported file type {path.suffix!r}; use one of {', '.join(sorted(TABLE_SUFFIXES))}",
        )
    return fmt


def read_table(
    path: str | os.PathLike[str],
    fmt: TableFormat | str | None = None,
    *,
    require: Sequence[str] = (),
) -> Iterator[Row]:
    """Stream the rows of a tabular file (``fmt`` defaults to :func:`table_format`).

    ``require``: columns that must exist; checked against the header (CSV/TSV) or the schema
    (Parquet) before any row is read. JSON rows have no shared schema, so callers check
    their fields per row. A missing file raises ``FileNotFoundError``; bad content raises
    :class:`DataError` naming the file, the line (or row) and, where one is at fault, the field.
    """
    path = Path(path)
    fmt = TableFormat(fmt) if fmt is not None else table_format(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    if fmt is TableFormat.JSONL:
        return _jsonl_rows(path)
    if fmt is TableFormat.JSON:
        return _json_rows(path)
    if fmt is TableFormat.PARQUET:
        return _parquet_rows(path, require)
    return _csv_rows(path, "\t" if fmt is TableFormat.TSV else ",", require)


def _require(path: Path, line: int | None, columns: Sequence[str], require: Sequence[str]) -> None:
    for name in require:
        if name not in columns:
            raise DataError(path, line, f"no such column (columns: {', '.join(columns)})", field=name)


def _duplicate(path: Path, line: int | None, columns: Sequence[str], part: str) -> None:
    seen: set[str] = set()
    for name in columns:
        if name in seen:
            raise DataError(path, line, f"column {name!r} appears twice in the {part}")
        seen.add(name)


def _jsonl_rows(path: Path) -> Iterator[Row]:
    for row, (line, values) in enumerate(iter_jsonl(path), start=1):
        yield Row(values, Position(path, row, line=line))


def _json_rows(path: Path) -> Iterator[Row]:
    lines = iter_text_lines(path)
    with closing(lines):  # only the first non-blank line decides
        text = next((text.lstrip() for _n, text in lines if text.strip()), None)
    if text is None:
        raise DataError(path, None, "the file is empty (no JSON records)")
    if text.startswith("["):
        yield from _json_array_rows(path)
        return
    if not text.startswith("{"):
        try:
            value = json.loads(text)
        except json.JSONDecodeError:
            pass  # JSON Lines reading names the line and the column
        else:
            raise DataError(
                path, None, f"expected a JSON array of objects or JSON Lines, got {type(value).__name__}"
            )
    yield from _jsonl_rows(path)


def _json_array_rows(path: Path) -> Iterator[Row]:
    try:
        data = json.loads(read_utf8(path))
    except json.JSONDecodeError as err:
        raise DataError(path, err.lineno, f"invalid JSON at column {err.colno}: {err.msg}") from None
    if not data:
        raise DataError(path, None, "the file is empty (an empty JSON array)")
    for index, values in enumerate(data):
        if not isinstance(values, dict):
            raise DataError(
                path, None, f"element [{index}]: expected a JSON object, got {type(values).__name__}"
            )
        yield Row(values, Position(path, index + 1, element=index))


def _csv_rows(path: Path, delimiter: str, require: Sequence[str]) -> Iterator[Row]:
    header: list[str] | None = None
    row = 0
    for line, cells in iter_csv_rows(path, delimiter=delimiter):
        if header is None:
            header = [cell.strip() for cell in cells]
            _duplicate(path, line, header, "header")
            _require(path, line, header, require)
            continue
        if len(cells) != len(header):
            raise DataError(path, line, f"expected {len(header)} columns like the header, got {len(cells)}")
        row += 1
        yield Row(dict(zip(header, cells, strict=True)), Position(path, row, line=line))
    if header is None:
        raise DataError(path, None, "the file is empty (no header row)")
    if row == 0:
        raise DataError(path, None, "the file is empty (a header row and no records)")


def _parquet_rows(path: Path, require: Sequence[str]) -> Iterator[Row]:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError as err:  # pragma: no cover - pyarrow ships with datasets
        raise ImportError("reading Parquet needs pyarrow: pip install pyarrow") from err
    try:
        handle = pq.ParquetFile(path)
    except Exception as err:  # pyarrow raises several types for a file that is not Parquet
        raise DataError(path, None, f"not a readable Parquet file ({err})") from None
    columns = handle.schema_arrow.names
    _duplicate(path, None, columns, "schema")
    _require(path, None, columns, require)
    if handle.metadata.num_rows == 0:
        raise DataError(path, None, "the file is empty (no rows)")
    row = 0
    try:
        for batch in handle.iter_batches(batch_size=_PARQUET_BATCH):
            for values in batch.to_pylist():
                row += 1
                yield Row(values, Position(path, row))
    except pa.ArrowException as err:
        raise DataError(path, row + 1, f"not a readable Parquet file ({err})") from None
