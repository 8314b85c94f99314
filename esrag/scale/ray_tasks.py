"""The work a Ray build runs on the cluster: reading the corpus, encoding (one model per
actor), and writing one shard. Plain picklable callables over numpy batches; they import
nothing from Ray, so they are testable without it.

Batch columns: ``id``, ``text``, ``meta`` (metadata as JSON), ``hash`` (content hash),
``seq`` (position in the corpus); after :class:`Annotate`: ``cid`` (coarse id) and
``shard``; after :class:`Encode`: ``source`` and ``fine`` (float32 vectors).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from esrag.data.corpus import CorpusFormat, CorpusSpec, read_corpus
from esrag.index import state as st
from esrag.index.batch import DocBatch
from esrag.index.config import CascadeConfig
from esrag.index.embedder import EmbedderAdapter
from esrag.index.format import load_state, save_state
from esrag.index.shard_store import ShardSeed
from esrag.index.shardset import new_shard_folder, shards_of

__all__ = [
    "READ_BLOCK",
    "Annotate",
    "Encode",
    "ReadCorpus",
    "ShardWrite",
    "doc_batch",
    "load_encoder",
    "stored_hashes",
    "write_group",
    "write_shard",
]

logger = logging.getLogger(__name__)

READ_BLOCK = 4096
"""Documents per block the reader yields."""


def _block(docs: list[Any], first: int) -> dict[str, np.ndarray]:
    return {
        "id": np.array([d.id for d in docs], dtype=object),
        "text": np.array([d.text for d in docs], dtype=object),
        "meta": np.array([json.dumps(d.metadata, ensure_ascii=False) for d in docs], dtype=object),
        "hash": np.array([d.content_hash for d in docs], dtype=object),
        "seq": np.arange(first, first + len(docs), dtype=np.int64),
    }


@dataclass(frozen=True)
class ReadCorpus:
    """Reads a corpus with :func:`esrag.data.corpus.read_corpus` (the single-machine reader:
    the same field rules and ``FILE:LINE`` errors), yielding blocks of documents.
    """

    path: str
    spec: CorpusSpec
    fmt: CorpusFormat | None

    def __call__(self, _batch: Any) -> Iterator[dict[str, np.ndarray]]:
        """Yield the corpus in blocks of :data:`READ_BLOCK` documents (input ignored)."""
        docs: list[Any] = []
        first = 0
        for doc in read_corpus(self.path, self.spec, self.fmt):
            docs.append(doc)
            if len(docs) == READ_BLOCK:
                yield _block(docs, first)
                first += len(docs)
                docs = []
        if docs:
            yield _block(docs, first)


@dataclass(frozen=True)
class Annotate:
    """Keeps the documents to encode (``todo``: their sorted ``seq``, or ``None`` for all) and
    gives each its coarse id (``first_id`` + its rank in ``todo``) and its shard.
    """

    todo: np.ndarray | None
    first_id: int
    shards: int

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The batch's rows to encode, with ``cid`` and ``shard`` columns."""
        seq = batch["seq"]
        if self.todo is None:
            keep, rank = np.ones(seq.size, dtype=bool), seq
        else:
            rank = np.searchsorted(self.todo, seq)
            keep = (rank < self.todo.size) & (self.todo[np.minimum(rank, self.todo.size - 1)] == seq)
        out = {name: column[keep] for name, column in batch.items()}
        out["cid"] = (self.first_id + rank[keep]).astype(np.int64)
        out["shard"] = shards_of(list(out["id"]), self.shards)
        return out


def load_encoder(model: str | None, device: str | None) -> Any:
    """An ``EspressoEncoder`` for a model folder or hub name (``None``: the shipped default),
    named like the CLI names it (a folder's resolved path), so manifests agree.
    """
    from esrag.encoder import EspressoEncoder

    if model is None or model == "default":
        return EspressoEncoder(device=device)
    encoder = EspressoEncoder(model, device=device)
    if Path(model).expanduser().exists():
        encoder.name = str(Path(model).expanduser().resolve())
    return encoder


class Encode:
    """An actor's encoder: loads the model once, then encodes batches into both views
    (the rows ``annotate`` keeps, with their coarse ids and shards).
    """

    def __init__(
        self,
        config: dict[str, Any],
        model: str | None,
        device: str | None,
        threads: int,
        batch_size: int,
        annotate: Annotate,
        factory: Callable[[], Any] | None = None,
    ) -> None:
        import torch

        torch.set_num_threads(max(1, int(threads)))
        encoder = factory() if factory is not None else load_encoder(model, device)
        self.adapter = EmbedderAdapter(encoder, CascadeConfig.from_dict(config))
        self.batch_size = batch_size
        self.annotate = annotate

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The kept rows of the batch with ``cid``, ``shard``, ``source`` and ``fine``."""
        batch = self.annotate(batch)
        if not len(batch["id"]):
            dim_s, dim_f = self.adapter.source_dim or 0, self.adapter.fine_dim or 0
            return {
                **batch,
                "source": np.zeros((0, dim_s), np.float32),
                "fine": np.zeros((0, dim_f), np.float32),
            }
        source, fine = self.adapter.encode_documents(list(batch["text"]), batch_size=self.batch_size)
        return {**batch, "source": np.asarray(source, np.float32), "fine": np.asarray(fine, np.float32)}


def doc_batch(rows: dict[str, np.ndarray]) -> DocBatch:
    """The encoded rows as a checked :class:`DocBatch` (in the given order)."""
    return DocBatch.checked(
        [str(i) for i in rows["id"]],
        [str(t) for t in rows["text"]],
        [json.loads(m) for m in rows["meta"]],
        np.stack(list(rows["source"])) if rows["source"].dtype == object else rows["source"],
        np.stack(list(rows["fine"])) if rows["fine"].dtype == object else rows["fine"],
        source_dim=None,
        fine_dim=None,
    )


def write_shard(
    seed: ShardSeed | None,
    folder: str,
    shard: int,
    generation: int,
    identity: dict[str, Any],
    previous: str | None,
    remove: list[str],
    rows: dict[str, np.ndarray] | None,
) -> dict[str, Any]:
    """Write shard ``shard`` of ``generation``: the ``previous`` shard folder (or an empty
    shard from ``seed``), less the ``remove`` ids, plus the encoded ``rows`` in coarse-id
    order. Returns ``{"shard", "path", "count", "added"}``.
    """
    if previous is None and seed is None:
        raise ValueError(f"shard {shard}: neither a previous shard folder nor a seed to start from")
    state = load_state(previous)[0] if previous else seed.empty_state()  # type: ignore[union-attr]
    st.remove(state, remove)
    added = 0
    if rows is not None and len(rows["id"]):
        ids = [str(i) for i in rows["id"]]
        if len(set(ids)) != len(ids):
            raise RuntimeError(f"shard {shard}: a document arrived twice (a retried task was counted twice)")
        order = np.argsort(rows["cid"], kind="stable")
        ordered = {name: column[order] for name, column in rows.items()}
        st.insert(state, doc_batch(ordered), ordered["cid"])
        added = len(ids)
    path = new_shard_folder(Path(folder), shard, generation)
    save_state(state, path, identity)
    return {"shard": shard, "path": str(path), "count": len(state), "added": added}


@dataclass(frozen=True)
class ShardWrite:
    """:func:`write_shard` for one group of encoded rows (all rows of one shard)."""

    seed: ShardSeed | None
    folder: str
    generation: int
    identity: dict[str, Any]
    previous: dict[int, str]
    remove: dict[int, list[str]]

    def __call__(self, rows: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Write the group's shard; one result row."""
        shard = int(rows["shard"][0])
        done = write_shard(
            self.seed,
            self.folder,
            shard,
            self.generation,
            self.identity,
            self.previous.get(shard),
            self.remove.get(shard, []),
            rows,
        )
        return {name: np.array([value]) for name, value in done.items()}


def write_group(rows: dict[str, np.ndarray], *, writer: ShardWrite) -> dict[str, np.ndarray]:
    """``writer(rows)`` as a plain function (what ``map_groups`` takes)."""
    return writer(rows)


def stored_hashes(shard_folder: str) -> tuple[list[str], list[str]]:
    """(ids, content hashes) of the documents of a shard folder (for an incremental build)."""
    from esrag.data.corpus import content_hash

    state = load_state(shard_folder, verify=False)[0]
    docs = st.documents(state, st.live_ids(state))
    return [d.id for d in docs], [content_hash(d.text, d.metadata) for d in docs]
