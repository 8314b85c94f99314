"""Training data: pairs, triplets and scored pairs from files, BEIR folders, corpora or the hub.

Every source becomes one or more :class:`Examples` (texts as plain lists). JSONL, JSON
(an array of objects, or JSON Lines) and CSV/TSV files are read here, keeping each row's
line; Parquet files, and hub dataset names when online, with ``datasets``. Errors are
:class:`esrag.data.DataError` naming the file, the line (for text formats; the element
index for JSON arrays), the row and the column.
"""

from __future__ import annotations

import json
import logging
import math
import random
import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from esrag.data import DataError, load_beir
from esrag.data._lines import iter_csv_rows, iter_jsonl, read_utf8
from esrag.train.config import CorpusPairs, DataKind, TrainConfig

__all__ = ["Examples", "load_source", "load_training_data", "mine_pairs", "split_holdout"]

logger = logging.getLogger(__name__)

ALIASES: dict[str, tuple[str, ...]] = {
    "anchor": ("anchor", "query", "question", "sentence1", "sent0", "text1", "premise"),
    "positive": ("positive", "document", "passage", "answer", "sentence2", "sent1", "text2", "hypothesis"),
    "negative": ("negative", "hard_negative", "hard_neg", "neg", "sent2"),
    "score": ("score", "similarity", "relevance", "label"),
}
_FORMATS = {".jsonl": "jsonl", ".json": "json", ".csv": "csv", ".tsv": "tsv", ".parquet": "parquet"}
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'(\[])")


@dataclass(frozen=True)
class Examples:
    """Rows of one source: (anchor, positive[, negative]) or (text1, text2, score)."""

    source: str
    anchors: list[str]
    positives: list[str]
    negatives: list[str] | None = None
    scores: list[float] | None = None

    def __len__(self) -> int:
        return len(self.anchors)

    @property
    def scored(self) -> bool:
        return self.scores is not None

    def select(self, indices: list[int]) -> Examples:
        def pick(values: list[Any] | None) -> list[Any] | None:
            return None if values is None else [values[i] for i in indices]

        return replace(
            self,
            anchors=pick(self.anchors),
            positives=pick(self.positives),
            negatives=pick(self.negatives),
            scores=pick(self.scores),
        )


# ---------------------------------------------------------------------- tables
@dataclass(frozen=True)
class _Table:
    """The columns of one source, and where each row came from (for error messages).

    ``lines``: the 1-based file line of each row (JSONL, CSV/TSV); ``array``: rows are the
    elements of a top-level JSON array (messages name ``element [i]``); ``text_cells``:
    every cell is a string (CSV/TSV), so numbers are parsed where a number is expected.
    """

    column_names: list[str]
    values: Callable[[str], list[Any]]
    size: int
    numeric: Callable[[str], bool]
    lines: list[int] | None = None
    array: bool = False
    text_cells: bool = False

    def __getitem__(self, column: str) -> list[Any]:
        return self.values(column)

    def __len__(self) -> int:
        return self.size

    def where(self, row: int) -> tuple[int | None, str]:
        """``(line, label)`` of row ``row`` (0-based) for a :class:`DataError`."""
        if self.array:
            return None, f"element [{row}]"
        return (None if self.lines is None else self.lines[row]), f"row {row + 1}"


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _rows_table(rows: list[dict[str, Any]], lines: list[int] | None, *, array: bool = False) -> _Table:
    names = list(dict.fromkeys(name for row in rows for name in row))
    columns = {name: [row.get(name) for row in rows] for name in names}

    def numeric(column: str) -> bool:
        present = [v for v in columns[column] if v is not None]
        return bool(present) and all(map(_is_number, present))

    return _Table(names, columns.__getitem__, len(rows), numeric, lines, array)


def _jsonl_table(path: Path) -> _Table:
    lines, rows = [], []
    for number, obj in iter_jsonl(path):
        lines.append(number)
        rows.append(obj)
    return _rows_table(rows, lines)


def _json_table(path: Path) -> _Table:
    """A ``.json`` file: a top-level array of objects, or JSON Lines."""
    text = read_utf8(path)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        if err.msg == "Extra data":  # several top-level values: JSON Lines
            return _jsonl_table(path)
        raise DataError(path, err.lineno, f"invalid JSON at column {err.colno}: {err.msg}") from None
    if isinstance(data, dict):  # a one-record JSON Lines file
        return _jsonl_table(path)
    if not isinstance(data, list):
        raise DataError(
            path, None, f"expected a JSON array of objects or JSON Lines, got {type(data).__name__}"
        )
    if not data:
        raise DataError(path, None, "the file is empty (an empty JSON array)")
    for index, item in enumerate(data):
        if not isinstance(item, dict):
            raise DataError(
                path, None, f"element [{index}]: expected a JSON object, got {type(item).__name__}"
            )
    return _rows_table(data, None, array=True)


_NUMBER = re.compile(r"[+-]?(\d+\.?\d*(e[+-]?\d+)?|\.\d+(e[+-]?\d+)?|inf|infinity|nan)", re.IGNORECASE)


_INTEGER = re.compile(r"[+-]?\d+")


def _parse_number(text: str) -> int | float | None:
    """The number a CSV cell spells (an int for an integer literal), else None."""
    text = text.strip()
    if _INTEGER.fullmatch(text):
        return int(text)
    return float(text) if _NUMBER.fullmatch(text) else None


def _csv_table(path: Path, delimiter: str) -> _Table:
    header: list[str] | None = None
    lines: list[int] = []
    rows: list[list[str]] = []
    for number, cells in iter_csv_rows(path, delimiter=delimiter):
        if header is None:
            header = [cell.strip() for cell in cells]
            duplicate = next((name for i, name in enumerate(header) if name in header[:i]), None)
            if duplicate is not None:
                raise DataError(path, number, f"column {duplicate!r} appears twice in the header")
            continue
        if len(cells) > len(header):
            raise DataError(path, number, f"expected {len(header)} columns like the header, got {len(cells)}")
        lines.append(number)
        rows.append(cells)
    if header is None:
        raise DataError(path, None, "the file is empty (no header row)")
    columns = {
        name: [row[i] if i < len(row) and row[i] != "" else None for row in rows]
        for i, name in enumerate(header)
    }

    def numeric(column: str) -> bool:
        present = [v for v in columns[column] if v is not None]
        return bool(present) and all(_parse_number(v) is not None for v in present)

    return _Table(header, columns.__getitem__, len(rows), numeric, lines, text_cells=True)


def _dataset_table(dataset: Any) -> _Table:
    def numeric(column: str) -> bool:
        dtype = getattr(dataset.features.get(column), "dtype", "")
        return str(dtype).startswith(("int", "uint", "float", "double"))

    return _Table(list(dataset.column_names), dataset.__getitem__, len(dataset), numeric)


def _read_table(source: str, config: TrainConfig) -> _Table:
    """The rows of a file (JSONL/JSON/CSV/TSV read here, with line numbers; Parquet with
    ``datasets``) or, when online, of a hub dataset."""
    path = Path(source)
    if path.is_file():
        fmt = _FORMATS.get(path.suffix.lower())
        if fmt is None:
            raise DataError(
                path, None, f"unsupported file type {path.suffix!r}; use one of {', '.join(sorted(_FORMATS))}"
            )
        if path.stat().st_size == 0:
            raise DataError(path, None, "the file is empty (no rows)")
        if fmt == "jsonl":
            return _jsonl_table(path)
        if fmt == "json":
            return _json_table(path)
        if fmt in ("csv", "tsv"):
            return _csv_table(path, "\t" if fmt == "tsv" else ",")
        import datasets

        try:  # Dataset.from_parquet reads a local file without load_dataset's network ping
            table = datasets.Dataset.from_parquet(str(path))
        except Exception as err:  # datasets wraps parser errors in many types
            raise DataError(path, None, f"could not read it as {fmt}: {err}") from err
        return _dataset_table(table)
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
        value = values[row]
        if table.text_cells and isinstance(value, str) and _parse_number(value) is not None:
            value = _parse_number(value)
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


def _table_examples(source: str, config: TrainConfig, kind: DataKind) -> Examples:
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


# ---------------------------------------------------------------------- corpora
def mine_pairs(docs: list[tuple[str, str]], how: CorpusPairs, *, seed: int, source: str) -> Examples:
    """Label-free pairs from ``(title, text)`` documents.

    ``title``: (title, text) for documents with both. ``sentence``: one sentence, picked at
    random (seeded), → the title and the rest of its document (the inverse cloze task);
    documents with fewer than two sentences are skipped.
    """
    rng = random.Random(seed)
    anchors: list[str] = []
    positives: list[str] = []
    for title, text in docs:
        title, text = title.strip(), text.strip()
        if how is CorpusPairs.TITLE:
            if title and text:
                anchors.append(title)
                positives.append(text)
        elif how is CorpusPairs.SENTENCE:
            sentences = [s for s in _SENTENCE_END.split(text) if s.strip()]
            if len(sentences) >= 2:
                pick = rng.randrange(len(sentences))
                rest = " ".join(s for i, s in enumerate(sentences) if i != pick)
                anchors.append(sentences[pick])
                positives.append(f"{title} {rest}".strip())
    if not anchors:
        raise DataError(source, None, f"no {how.value} pairs could be mined from {len(docs)} documents")
    logger.info("%s: mined %d %s pairs from %d documents", source, len(anchors), how.value, len(docs))
    return Examples(source=f"{source} ({how.value} pairs)", anchors=anchors, positives=positives)


def _corpus_examples(source: str, config: TrainConfig) -> Examples:
    how = config.corpus_pairs if config.corpus_pairs is not CorpusPairs.NONE else CorpusPairs.TITLE
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
    docs = [(str(titles[i] or ""), str(texts[i] or "")) for i in rows]
    return mine_pairs(docs, how, seed=config.seed, source=source)


def _beir_examples(source: str, config: TrainConfig) -> list[Examples]:
    if config.split == "test":
        logger.warning("%s: training on the TEST qrels; never evaluate on them afterwards", source)
    data = load_beir(source, config.split)
    anchors, positives = [], []
    for qid, judged in data.qrels.items():
        query = data.queries[qid]
        if not query.strip():
            raise DataError(
                Path(source) / "queries.jsonl", None, f"query {qid!r} has an empty text", field="text"
            )
        for doc_id, grade in judged.items():
            doc = data.corpus.get(doc_id)
            if grade > 0 and doc is not None and doc.full_text:
                anchors.append(query)
                positives.append(doc.full_text)
    if not anchors:
        raise DataError(
            Path(source) / "qrels" / f"{config.split}.tsv", None, "no positive judgments to train on"
        )
    out = [Examples(source=f"{source} (qrels {config.split})", anchors=anchors, positives=positives)]
    logger.info("%s: %d (query, document) pairs from qrels/%s.tsv", source, len(anchors), config.split)
    if config.corpus_pairs is not CorpusPairs.NONE:
        docs = [(doc.title, doc.text) for doc in data.corpus.values()]
        out.append(mine_pairs(docs, config.corpus_pairs, seed=config.seed, source=source))
    return out


# ---------------------------------------------------------------------- entry points
def _detect(source: str, config: TrainConfig) -> DataKind:
    if config.kind is not DataKind.AUTO:
        return config.kind
    path = Path(source)
    if path.is_dir():
        if (path / "qrels").is_dir() and (path / "corpus.jsonl").is_file():
            return DataKind.BEIR
        raise DataError(
            path,
            None,
            "a folder is only accepted as a BEIR dataset (corpus.jsonl, queries.jsonl, qrels/<split>.tsv)",
        )
    return DataKind.AUTO


def load_source(source: str, config: TrainConfig) -> list[Examples]:
    """Every :class:`Examples` one source yields (a BEIR folder may give two)."""
    kind = _detect(source, config)
    if kind is DataKind.BEIR:
        found = _beir_examples(source, config)
    elif kind is DataKind.CORPUS:
        found = [_corpus_examples(source, config)]
    else:
        found = [_table_examples(source, config, kind)]
    if config.max_examples is not None:
        found = [_sample(ex, config.max_examples, config.seed) for ex in found]
    return found


def _sample(examples: Examples, limit: int, seed: int) -> Examples:
    if len(examples) <= limit:
        return examples
    return examples.select(sorted(random.Random(seed).sample(range(len(examples)), limit)))


def split_holdout(examples: Examples, fraction: float, seed: int) -> tuple[Examples, Examples]:
    """Hold out ``fraction`` of the distinct anchors (all their rows) for evaluation."""
    distinct = sorted(set(examples.anchors))
    random.Random(seed).shuffle(distinct)
    held = set(distinct[: max(1, round(fraction * len(distinct)))])
    train = [i for i, a in enumerate(examples.anchors) if a not in held]
    evaluation = [i for i, a in enumerate(examples.anchors) if a in held]
    return examples.select(train), examples.select(evaluation)


def load_training_data(config: TrainConfig) -> tuple[list[Examples], list[Examples]]:
    """(train, eval) examples of a config; eval from ``config.eval`` or a held-out fraction."""
    train = [ex for source in config.train for ex in load_source(source, config)]
    evaluation = [ex for source in config.eval for ex in load_source(source, config)]
    if not evaluation and config.eval_fraction > 0:
        pairs = [split_holdout(ex, config.eval_fraction, config.seed) for ex in train]
        train = [t for t, _ in pairs]
        evaluation = [e for _, e in pairs if len(e) >= 2]
    for ex in train:
        if len(ex) < 2:
            raise DataError(
                ex.source, None, f"only {len(ex)} training row(s); in-batch training needs at least 2"
            )
    return train, evaluation
