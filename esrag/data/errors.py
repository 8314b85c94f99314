"""Errors for malformed input data: every message names the file, the line and the field."""

from __future__ import annotations

import os

from esrag.errors import EsragError

__all__ = ["DataError", "where"]


def where(path: str | os.PathLike[str], line: int | None = None) -> str:
    """``file:line`` (or just ``file``) for error messages."""
    return f"{os.fspath(path)}:{line}" if line is not None else os.fspath(path)


class DataError(EsragError, ValueError):
    """A malformed input file; ``str(err)`` starts with ``file:line:``.

    Attributes ``path``, ``line`` (1-based, or None when the whole file is at fault),
    ``field`` (or None) and ``detail`` (the message without the location) let callers
    point at the problem programmatically.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        line: int | None,
        message: str,
        *,
        field: str | None = None,
    ) -> None:
        self.path = os.fspath(path)
        self.line = line
        self.field = field
        self.detail = message
        prefix = where(path, line)
        detail = f"field {field!r}: {message}" if field is not None else message
        super().__init__(f"{prefix}: {detail}")

    def __reduce__(self) -> tuple[object, ...]:
        # picklable with its attributes (Ray workers raise it, the driver re-raises it)
        return (_rebuild, (self.path, self.line, self.detail, self.field))


def _rebuild(path: str, line: int | None, detail: str, field: str | None) -> DataError:
    return DataError(path, line, detail, field=field)
