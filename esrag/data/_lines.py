"""Line-by-line readers that report file:line on bad bytes, bad JSON or bad CSV."""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from esrag.data.errors import DataError

__all__ = ["iter_csv_rows", "iter_jsonl", "iter_text_lines", "read_utf8", "require_str"]


def _not_utf8(path: Path, line: int, raw: bytes, start: int) -> DataError:
    return DataError(
        path,
        line,
        f"not valid UTF-8 (byte {start} of the line: {raw[start : start + 1]!r}); "
        "re-encode the file as UTF-8",
    )


def iter_text_lines(path: str | os.PathLike[str]) -> Iterator[tuple[int, str]]:
    """Yield ``(line_number, text)`` (1-based, line ending stripped) of a UTF-8 file.

    Blank lines are yielded too; non-UTF-8 bytes raise :class:`DataError` naming the line
    and byte offset. A missing file raises ``FileNotFoundError`` naming the path.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    with open(path, "rb") as handle:
        for number, raw in enumerate(handle, start=1):
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as err:
                raise _not_utf8(path, number, raw, err.start) from None
            if number == 1 and text.startswith("\ufeff"):
                text = text[1:]
            yield number, text.rstrip("\r\n")


def read_utf8(path: str | os.PathLike[str]) -> str:
    """The whole text of a UTF-8 file (a leading BOM dropped); bad bytes raise
    :class:`DataError` naming the line, a missing file ``FileNotFoundError``.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        line_start = raw.rfind(b"\n", 0, err.start) + 1
        line_end = raw.find(b"\n", err.start)
        line = raw[line_start : line_end if line_end >= 0 else len(raw)]
        raise _not_utf8(path, raw.count(b"\n", 0, err.start) + 1, line, err.start - line_start) from None
    return text[1:] if text.startswith("\ufeff") else text


def iter_csv_rows(path: str | os.PathLike[str], *, delimiter: str = ",") -> Iterator[tuple[int, list[str]]]:
    """Yield ``(line_number, cells)`` for each record of a UTF-8 CSV/TSV file (``"``-quoted
    fields may span lines; the number is the record's **first** line). Records whose cells
    are all blank are skipped. Bad bytes and malformed CSV raise :class:`DataError`.
    """
    reader = csv.reader((text + "\n" for _number, text in iter_text_lines(path)), delimiter=delimiter)
    consumed = 0
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as err:
            raise DataError(path, consumed + 1, f"not valid CSV: {err}") from None
        start, consumed = consumed + 1, reader.line_num
        if any(cell.strip() for cell in row):
            yield start, row


def iter_jsonl(path: str | os.PathLike[str]) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield ``(line_number, object)`` for each non-blank line of a JSON Lines file.

    Raises :class:`DataError` for invalid JSON, a line that is not a JSON object, or a
    file with no records at all.
    """
    seen = False
    for number, text in iter_text_lines(path):
        if not text.strip():
            continue
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as err:
            raise DataError(path, number, f"invalid JSON at column {err.colno}: {err.msg}") from None
        if not isinstance(obj, dict):
            raise DataError(path, number, f"expected a JSON object, got {type(obj).__name__}")
        seen = True
        yield number, obj
    if not seen:
        raise DataError(path, None, "the file is empty (no JSON records)")


def require_str(
    obj: dict[str, Any],
    field: str,
    path: str | os.PathLike[str],
    line: int,
    *,
    default: str | None = None,
    allow_int: bool = False,
) -> str:
    """``obj[field]`` as a string; a missing or mistyped field raises :class:`DataError`."""
    if field not in obj or obj[field] is None:
        if default is not None:
            return default
        keys = ", ".join(sorted(map(str, obj))) or "none"
        raise DataError(path, line, f"missing (the record has: {keys})", field=field)
    value = obj[field]
    if allow_int and isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if not isinstance(value, str):
        raise DataError(path, line, f"expected a string, got {type(value).__name__}", field=field)
    return value
