"""Training data: pairs, triplets and scored pairs from files, BEIR folders, corpora or the hub.

Every source becomes one or more :class:`Examples` (texts as plain lists). Tables (JSONL,
JSON, CSV/TSV and Parquet files, hub datasets) become rows in :mod:`esrag.train.columns`,
which reads local files with the one reader of tables, :mod:`esrag.data.tables`. Errors are
:class:`esrag.data.DataError` naming the file, the line (for text formats; the element
index for JSON arrays), the row and the column.
"""

from __future__ import annotations

import logging
import random
import re
from dataclasses import replace
from pathlib import Path

from esrag.data import DataError, load_beir
from esrag.train.columns import corpus_documents, table_examples
from esrag.train.config import CorpusPairs, DataKind, TrainConfig
from esrag.train.examples import Examples
from esrag.train.holdout import holdout_count, pick_anchors, split_by_anchors, split_sources

__all__ = [
    "Examples",
    "check_training_sources",
    "load_source",
    "load_sources",
    "load_training_data",
    "mine_pairs",
    "split_holdout",
]

logger = logging.getLogger(__name__)

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'(\[])")


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
    return Examples(source=f"{source} ({how.value} pairs)", anchors=anchors, positives=positives, mined=True)


def _corpus_examples(source: str, config: TrainConfig) -> Examples:
    how = config.corpus_pairs if config.corpus_pairs is not CorpusPairs.NONE else CorpusPairs.TITLE
    return mine_pairs(corpus_documents(source, config), how, seed=config.seed, source=source)


def _beir_examples(source: str, config: TrainConfig) -> list[Examples]:
    """(query, document) rows for judgments of grade >= ``min_grade``, every judgment kept
    in ``judged`` (lower grades are masked, not negatives), the corpus attached.
    """
    if config.split == "test":
        logger.warning("%s: training on the TEST qrels; never evaluate on them afterwards", source)
    data = load_beir(source, config.split)
    anchors, positives = [], []
    judged: dict[str, dict[str, int]] = {}
    for qid, grades in data.qrels.items():
        query = data.queries[qid]
        if not query.strip():
            raise DataError(
                Path(source) / "queries.jsonl", None, f"query {qid!r} has an empty text", field="text"
            )
        for doc_id, grade in grades.items():
            doc = data.corpus.get(doc_id)
            if grade > 0 and doc is not None and doc.full_text:
                judged.setdefault(query, {})[doc.full_text] = grade
                if grade >= config.min_grade:
                    anchors.append(query)
                    positives.append(doc.full_text)
    if not anchors:
        where = Path(source) / "qrels" / f"{config.split}.tsv"
        if not judged:
            raise DataError(where, None, "no positive judgments to train on")
        top = max(g for grades in judged.values() for g in grades.values())
        raise DataError(
            where, None, f"no judgments of grade >= min_grade {config.min_grade} to train on (highest: {top})"
        )
    corpus = [text for text in data.doc_texts() if text]
    out = [
        Examples(
            source=f"{source} (qrels {config.split})",
            anchors=anchors,
            positives=positives,
            judged=judged,
            corpus=corpus,
        )
    ]
    logger.info(
        "%s: %d (query, document) pairs of grade >= %d from qrels/%s.tsv (%d queries)",
        source,
        len(anchors),
        config.min_grade,
        config.split,
        len(set(anchors)),
    )
    if config.corpus_pairs is not CorpusPairs.NONE:
        docs = [(doc.title, doc.text) for doc in data.corpus.values()]
        mined = mine_pairs(docs, config.corpus_pairs, seed=config.seed, source=source)
        out.append(replace(mined, corpus=corpus))
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
        found = [table_examples(source, config, kind)]
    if config.max_examples is not None:
        found = [_sample(ex, config.max_examples, config.seed) for ex in found]
    return found


def _sample(examples: Examples, limit: int, seed: int) -> Examples:
    if len(examples) <= limit:
        return examples
    return examples.select(sorted(random.Random(seed).sample(range(len(examples)), limit)))


def split_holdout(examples: Examples, fraction: float, seed: int) -> tuple[Examples, Examples]:
    """Hold out ``fraction`` of the distinct anchors (all their rows) for evaluation."""
    held = pick_anchors(examples, holdout_count(len(set(examples.anchors)), max(fraction, 1e-12)), seed)
    return split_by_anchors(examples, held)


def load_sources(config: TrainConfig) -> tuple[list[Examples], list[Examples]]:
    """(training sources, explicit ``eval`` sources) as loaded, before any holdout."""
    train = [ex for source in config.train for ex in load_source(source, config)]
    evaluation = [ex for source in config.eval for ex in load_source(source, config)]
    return train, evaluation


def check_training_sources(train: list[Examples]) -> None:
    """Every training source needs two rows for in-batch negatives."""
    for ex in train:
        if len(ex) < 2:
            raise DataError(
                ex.source, None, f"only {len(ex)} training row(s); in-batch training needs at least 2"
            )


def load_training_data(config: TrainConfig) -> tuple[list[Examples], list[Examples]]:
    """(train, eval) examples of a config: eval from ``config.eval``, else the held-out
    anchors of :func:`esrag.train.holdout.split_sources` (``eval_fraction``; ``None``: the
    automatic rule).
    """
    train, evaluation = load_sources(config)
    if not evaluation:
        split = split_sources(train, config.eval_fraction, config.seed)
        train, evaluation = split.train, [e for e in split.held if len(e) >= 2]
    check_training_sources(train)
    return train, evaluation
