"""Read a BEIR-format dataset folder: corpus.jsonl, queries.jsonl, qrels/<split>.tsv."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from esrag.data._lines import iter_jsonl, iter_text_lines, require_str
from esrag.data.errors import DataError

__all__ = [
    "BeirDataset",
    "BeirDoc",
    "doc_text",
    "iter_beir_corpus",
    "load_beir",
    "load_qrels",
    "load_queries",
]

log = logging.getLogger(__name__)

Qrels = dict[str, dict[str, int]]


class BeirDoc(NamedTuple):
    """One corpus document; unpacks as ``title, text = doc``."""

    title: str
    text: str

    @property
    def full_text(self) -> str:
        """BEIR-style "title text", stripped (what gets encoded)."""
        return doc_text(self.title, self.text)


def doc_text(title: str, text: str) -> str:
    """The BEIR convention for encoding a document: ``(title + " " + text).strip()``."""
    return f"{title} {text}".strip()


@dataclass(frozen=True)
class BeirDataset:
    """A BEIR dataset: ``corpus`` id → :class:`BeirDoc`, ``queries`` id → text, ``qrels``.

    ``queries`` holds only the queries judged in ``qrels`` of the loaded split (BEIR's own
    loader does the same), in file order.
    """

    folder: Path
    split: str
    corpus: dict[str, BeirDoc]
    queries: dict[str, str]
    qrels: Qrels = field(repr=False)

    @property
    def doc_ids(self) -> list[str]:
        """Corpus document ids, in file order."""
        return list(self.corpus)

    def doc_texts(self) -> list[str]:
        """``doc_text(title, text)`` for every document, in corpus order."""
        return [doc.full_text for doc in self.corpus.values()]

    def __repr__(self) -> str:
        return (
            f"BeirDataset(folder={str(self.folder)!r}, split={self.split!r}, "
            f"docs={len(self.corpus)}, queries={len(self.queries)}, "
            f"judgments={sum(map(len, self.qrels.values()))})"
        )


def iter_beir_corpus(path: str | os.PathLike[str]) -> Iterator[tuple[str, BeirDoc, int]]:
    """Stream ``(doc_id, BeirDoc, line_number)`` from a BEIR ``corpus.jsonl``."""
    for number, obj in iter_jsonl(path):
        doc_id = require_str(obj, "_id", path, number, allow_int=True)
        title = require_str(obj, "title", path, number, default="")
        text = require_str(obj, "text", path, number)
        yield doc_id, BeirDoc(title, text), number


def load_queries(path: str | os.PathLike[str]) -> dict[str, str]:
    """Queries as id → text: BEIR ``queries.jsonl`` (``_id``/``id`` and ``text``/``query``)
    or a TSV of ``id<TAB>text`` rows (header optional).
    """
    path = Path(path)
    queries: dict[str, str] = {}
    first: dict[str, int] = {}
    for qid, text, number in _iter_queries(path):
        if qid in first:
            raise DataError(
                path, number, f"duplicate query id {qid!r} (first on line {first[qid]})", field="_id"
            )
        first[qid] = number
        queries[qid] = text
    return queries


def _iter_queries(path: Path) -> Iterator[tuple[str, str, int]]:
    if path.suffix.lower() in (".tsv", ".txt"):
        seen = False
        for number, line in iter_text_lines(path):
            if not line.strip():
                continue
            parts = line.split("\t")
            if len(parts) < 2:
                raise DataError(path, number, f"expected 'id<TAB>text', got {line!r}")
            if number == 1 and parts[0].strip().lower() in ("id", "_id", "qid", "query-id"):
                continue
            seen = True
            yield parts[0].strip(), "\t".join(parts[1:]).strip(), number
        if not seen:
            raise DataError(path, None, "the file is empty (no queries)")
        return
    for number, obj in iter_jsonl(path):
        id_field = "_id" if "_id" in obj else "id"
        text_field = "text" if "text" in obj or "query" not in obj else "query"
        qid = require_str(obj, id_field, path, number, allow_int=True)
        yield qid, require_str(obj, text_field, path, number), number


def load_qrels(path: str | os.PathLike[str]) -> Qrels:
    """A TREC/BEIR qrels TSV (``query-id corpus-id score``, header optional, CRLF ok)."""
    qrels: Qrels = {}
    for number, line in iter_text_lines(path):
        if not line.strip():
            continue
        parts = line.split("\t")
        if len(parts) == 4:  # TREC layout: qid iteration docid rel
            parts = [parts[0], parts[2], parts[3]]
        if len(parts) != 3:
            raise DataError(
                path,
                number,
                f"expected 3 tab-separated columns (query-id, corpus-id, score), got {len(parts)}: {line!r}",
            )
        qid, docid, score = (p.strip() for p in parts)
        if number == 1 and not _is_int(score):
            continue  # header line
        if not _is_int(score):
            raise DataError(path, number, f"expected an integer, got {score!r}", field="score")
        if not qid or not docid:
            raise DataError(path, number, "empty query-id or corpus-id")
        qrels.setdefault(qid, {})[docid] = int(score)
    if not qrels:
        raise DataError(path, None, "the qrels file has no judgments")
    return qrels


def _is_int(text: str) -> bool:
    return text.lstrip("-").isdigit()


def load_beir(folder: str | os.PathLike[str], split: str = "test") -> BeirDataset:
    """Load a BEIR folder; errors name the file and line at fault."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: not a BEIR folder (no such directory)")
    qrels_path = folder / "qrels" / f"{split}.tsv"
    if not qrels_path.is_file():
        found = sorted(p.stem for p in (folder / "qrels").glob("*.tsv"))
        hint = f"available splits: {', '.join(found)}" if found else "the folder has no qrels/"
        raise FileNotFoundError(f"{qrels_path}: no qrels for split {split!r} ({hint})")
    corpus: dict[str, BeirDoc] = {}
    corpus_path = folder / "corpus.jsonl"
    for doc_id, doc, number in iter_beir_corpus(corpus_path):
        if doc_id in corpus:
            raise DataError(corpus_path, number, f"duplicate document id {doc_id!r}", field="_id")
        corpus[doc_id] = doc
    all_queries = load_queries(folder / "queries.jsonl")
    qrels = load_qrels(qrels_path)
    missing = [qid for qid in qrels if qid not in all_queries]
    if missing:
        raise DataError(
            qrels_path, None, f"{len(missing)} judged query ids are not in queries.jsonl, e.g. {missing[0]!r}"
        )
    unknown = sum(1 for judged in qrels.values() for d in judged if d not in corpus)
    if unknown:
        log.warning("%s: %d judgments point at documents missing from the corpus", qrels_path, unknown)
    queries = {qid: text for qid, text in all_queries.items() if qid in qrels}
    log.info("loaded %s split %s: %d docs, %d queries", folder, split, len(corpus), len(queries))
    return BeirDataset(folder, split, corpus, queries, qrels)
