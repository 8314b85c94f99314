"""Training examples from tables: column aliases, text and score columns, ``where`` filters.

Local files are read with :func:`esrag.data.tables.read_table` (one rule per extension, see
:mod:`esrag.data.tables`); a name that is not a path is loaded from the hub with
``datasets.load_dataset``. CSV/TSV cells are text: a score column counts as numeric when
every non-empty cell spells a number, and those cells are parsed where a number is
expected; an empty cell is a missing value. Errors are :class:`esrag.data.DataError` naming
the source, the line (none for the elements of a JSON array or hub rows), the row and the
column.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from esrag.data.errors import DataError
from esrag.data.tables import Position, TableFormat, read_table, table_format
from esrag.train.config import DataKind, TrainConfig
from esrag.train.examples import Examples

__all__ = ["ALIASES", "corpus_documents", "table_examples"]

logger = logging.getLogger(__name__)

ALIASES: dict[str, tuple[str, ...]] = {
    "anchor": ("anchor", "query", "question", "sentence1", "sent0", "text1", "premise"),
    "positive": ("positive", "document", "passage", "answer", "sentence2", "sent1", "text2", "hypothesis"),
    "negative": ("negative", "hard_negative", "hard_neg", "neg", "sent2"),
    "score": ("score", "similarity", "relevance", "label"),
}
_NUMBER = re.compile(r"[+-]?(\d+\.?\d*(e[+-]?\d+)?|\.\d+(e[+-]?\d+)?|inf|infinity|nan)", re.IGNORECASE)
_INTEGER = re.compile(r"[+-]?\d+")


@dataclass(frozen=True)
class _Table:
    """The columns of one source, and where each row came from (for error messages).

    ``positions``: each row's :class:`Position` (None for a hub dataset); ``text_cells``:
    every cell is a string (CSV/TSV), so numbers are parsed where a number is expected.
    """

    column_names: list[str]
    values: Callable[[str], list[Any]]
    size: int
    numeric: Callable[[str], bool]
    positions: list[Position] | None = None
    text_cells: bool = False

    def __getitem__(self, column: str) -> list[Any]:
        return self.values(column)

    def __len__(self) -> int:
        return self.size

    def where(self, row: int) -> tuple[int | None, str]:
        """``(line, label)`` of row ``row`` (0-based) for a :class:`DataError`."""
        if self.positions is None:
            return None, f"row {row + 1}"
        position = self.positions[row]
        return position.locator, position.label


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _parse_number(text: str) -> int | float | None:
    """The number a CSV cell spells (an int for an integer literal), else None."""
    text = text.strip()
    if _INTEGER.fullmatch(text):
        return int(text)
    return float(text) if _NUMBER.fullmatch(text) else None


def _number(value: Any, text_cells: bool) -> Any:
    """``value`` as a number where a number is expected (text cells are parsed)."""
    if text_cells and isinstance(value, str):
        parsed = _parse_number(value)
        return value if parsed is None else parsed
    return value


def _file_table(path: Path) -> _Table:
    fmt = table_format(path)
    try:
        rows = list(read_table(path, fmt))
    except DataError as err:
        # a Parquet file pyarrow cannot use as a table: the training loader's wording since 0.1
        if fmt is TableFormat.PARQUET and err.line is None:
            raise DataError(path, None, f"could not read it as parquet: {err.detail}") from None
        raise
    names = list(dict.fromkeys(name for row in rows for name in row.values))
    text_cells = fmt.text_cells
    columns = {
        name: [None if text_cells and row.values.get(name) == "" else row.values.get(name) for row in rows]
        for name in names
    }

    def numeric(column: str) -> bool:
        present = [v for v in columns[column] if v is not None]
        return bool(present) and all(_is_number(_number(v, text_cells)) for v in present)

    positions = [row.position for row in rows]
    return _Table(names, columns.__getitem__, len(rows), numeric, positions, text_cells)


def _dataset_table(dataset: Any) -> _Table:
    def numeric(column: str) -> bool:
        dtype = getattr(dataset.features.get(column), "dtype", "")
        return str(dtype).startswith(("int", "uint", "float", "double"))

    return _Table(list(dataset.column_names), dataset.__getitem__, len(dataset), numeric)


def _read_table(source: str, config: TrainConfig) -> _Table:
    """The rows of a local file, or (a name that is not a path, when online) a hub dataset."""
    path = Path(source)
    if path.is_file():
        return _file_table(path)
    if path.exists() or source.startswith((".", "/", "~")) or path.suffix:
        raise FileNotFoundError(f"{source}: no such data file")
    import datasets

    logger.info("loading hub dataset %s (split %s)", source, config.split)
    return _dataset_table(datasets.load_dataset(source, split=config.split))


def _row_filter(table: _Table, source: str, config: TrainConfig) -> list[int]:
    keep = list(range(len(table)))
    for condition in config.where:
        column, value = condition.split("=", 1)
        if column not in table.column_names:
            raise DataError(
                source,
                None,
                f"where {condition!r}: column not found (columns: {', '.join(table.column_names)})",
                field=column,
            )
        values = table[column]
        keep = [i for i in keep if str(values[i]) == value]
    return keep


def _column(table: _Table, source: str, role: str, explicit: str | None, required: bool) -> str | None:
    columns = list(table.column_names)
    if explicit is not None:
        if explicit not in columns:
            raise DataError(
                source, None, f"column not found; the columns are {', '.join(columns)}", field=explicit
            )
        return explicit
    found = next((name for name in ALIASES[role] if name in columns), None)
    if found is None and required:
        raise DataError(
            source,
            None,
            f"no {role} column: none of {', '.join(ALIASES[role])} "
            f"is among the columns {', '.join(columns)}; name it with "
            f"--{role}-column",
        )
    return found


def _texts(table: _Table, column: str, rows: list[int], source: str) -> list[str]:
    values = table[column]
    out = []
    for row in rows:
        value = values[row]
        if value is None or (isinstance(value, float) and math.isnan(value)):
            value = ""
        if not isinstance(value, str):
            line, label = table.where(row)
            raise DataError(
                source,
                line,
                f"{label}: expected text, got {type(value).__name__} {value!r:.40}",
                field=column,
            )
        if not value.strip():
            line, label = table.where(row)
            raise DataError(source, line, f"{label}: empty text", field=column)
        out.append(value)
    return out


def _scores(
    table: _Table, column: str, rows: list[int], source: str, score_range: tuple[float, float] | None
) -> list[float]:
    values = table[column]
    out = []
    for row in rows:
        value = _number(values[row], table.text_cells)
        if not _is_number(value) or not math.isfinite(value):
            line, label = table.where(row)
            raise DataError(
                source, line, f"{label}: expected a finite number, got {value!r:.40}", field=column
            )
        if score_range is not None and not score_range[0] <= value <= score_range[1]:
            line, label = table.where(row)
            raise DataError(
                source,
                line,
                f"{label}: score {value} is "
                f"outside the declared range [{score_range[0]:g}, "
                f"{score_range[1]:g}]",
                field=column,
            )
        out.append(float(value))
    return out


def table_examples(source: str, config: TrainConfig, kind: DataKind) -> Examples:
    """The pair, triplet or scored rows of a table (``kind`` auto, pairs or scored)."""
    table = _read_table(source, config)
    rows = _row_filter(table, source, config)
    if not rows:
        raise DataError(
            source, None, "no rows" + (f" match {' and '.join(config.where)}" if config.where else "")
        )
    anchor = _column(table, source, "anchor", config.anchor_column, True)
    positive = _column(table, source, "positive", config.positive_column, True)
    assert anchor is not None and positive is not None
    score = _column(table, source, "score", config.score_column, kind is DataKind.SCORED)
    if kind is DataKind.AUTO:
        scored = score is not None and (config.score_column is not None or table.numeric(score))
    else:
        scored = kind is DataKind.SCORED
    negative = None if scored else _column(table, source, "negative", config.negative_column, False)
    examples = Examples(
        source=source,
        anchors=_texts(table, anchor, rows, source),
        positives=_texts(table, positive, rows, source),
        negatives=None if negative is None else _texts(table, negative, rows, source),
        scores=None
        if not scored or score is None
        else _scores(table, score, rows, source, config.score_range),
    )
    logger.info(
        "%s: %d %s rows (columns %s)",
        source,
        len(examples),
        "scored" if scored else "pair",
        ", ".join(c for c in (anchor, positive, negative, score if scored else None) if c),
    )
    return examples


def corpus_documents(source: str, config: TrainConfig) -> list[tuple[str, str]]:
    """``(title, text)`` of each (filtered) row of a corpus table, for pair mining; the
    columns are ``title``/``text`` unless ``anchor_column``/``positive_column`` name others.
    """
    table = _read_table(source, config)
    rows = _row_filter(table, source, config)
    title_col = config.anchor_column or "title"
    text_col = config.positive_column or "text"
    for column in (title_col, text_col):
        if column not in table.column_names:
            raise DataError(
                source,
                None,
                f"corpus column not found; the columns are {', '.join(table.column_names)}",
                field=column,
            )
    titles, texts = table[title_col], table[text_col]
    return [(str(titles[i] or ""), str(texts[i] or "")) for i in rows]
