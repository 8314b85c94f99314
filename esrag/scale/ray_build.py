"""Build a sharded cascade index on a Ray cluster (``esrag build CORPUS --index DIR --ray``).

The pipeline, in Ray Data:

1. **read**: a task streams the corpus through :func:`esrag.data.corpus.read_corpus` (the
   single-machine reader, so the field rules and ``FILE:LINE`` errors are the same; a
   failing read re-raises that same error on the driver);
2. **diff** (an existing sharded index): the driver compares the documents' content hashes
   with the stored ones (read per shard by tasks) and keeps only new and changed documents;
3. **encode**: ``map_batches`` over an actor pool of ``EspressoEncoder``s (one model load
   per actor, ``actors`` actors of ``threads_per_actor`` CPUs and ``gpus_per_actor`` GPUs;
   an actor that dies is restarted and its batch retried); the result is materialised once;
4. **fit** (a fresh build): the driver fits the coarse transform and trains the coarse
   quantizer on the first ``train_size`` documents, as a single-machine build does;
5. **write**: one task per shard (``groupby("shard").map_groups``) inserts its documents
   in coarse-id order into a shard started from the shared seed (or the shard's previous
   folder) and saves it (the single-index format, written atomically) into the index folder
   (so it must be on storage every worker can write);
6. **commit**: the driver writes the top-level manifest atomically (a fresh build swaps the
   whole folder in; an update writes the changed shards as a new generation and replaces
   ``shards.json``), so an interrupted build leaves the previous index loadable.

Document ``i`` of a fresh build gets coarse id ``i`` (an update: the next ids, in corpus
order), as in a single-machine build, so the sharded index searches like one index.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from esrag._io import atomic_folder, recover_folder
from esrag.data.corpus import CorpusFormat, CorpusSpec
from esrag.index import state as st
from esrag.index.config import CascadeConfig
from esrag.index.embedder import EmbedderAdapter
from esrag.index.format import is_index_folder
from esrag.index.identity import ModelCheck, identity_fields
from esrag.index.shard_store import ShardSeed, load_shards, write_shards
from esrag.index.shardset import ShardSetManifest, is_sharded_folder, read_shardset
from esrag.scale.cluster import cluster, original_error
from esrag.scale.ray_tasks import (
    Annotate,
    Encode,
    ReadCorpus,
    ShardWrite,
    doc_batch,
    load_encoder,
    stored_hashes,
    write_group,
    write_shard,
)
from esrag.validation import check_int

__all__ = ["RayOptions", "build_sharded"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RayOptions:
    """How a Ray build runs: where, with how many encoder actors, into how many shards."""

    address: str | None = None
    """Ray cluster address (``ray://...``, ``auto``, ``host:port``); ``None``: a local cluster."""
    actors: int = 2
    """Encoder actors (each loads the model once)."""
    threads_per_actor: int | None = None
    """CPUs (torch threads) per actor; default: the cluster's CPUs divided by ``actors``."""
    gpus_per_actor: float = 0.0
    shards: int = 4
    batch_size: int = 64
    """Documents per encoder batch."""

    def __post_init__(self) -> None:
        check_int(self.actors, "actors", minimum=1, expected="a positive int")
        check_int(self.shards, "shards", minimum=1, expected="a positive int")
        check_int(self.batch_size, "batch_size", minimum=1, expected="a positive int")
        if self.threads_per_actor is not None:
            check_int(self.threads_per_actor, "threads_per_actor", minimum=1, expected="a positive int")
        if not (isinstance(self.gpus_per_actor, (int, float)) and self.gpus_per_actor >= 0):
            raise ValueError(f"gpus_per_actor must be a number >= 0, got {self.gpus_per_actor!r}")


@dataclass
class _Plan:
    """What an update changes: ``todo`` (sorted seqs to encode) and the report's id lists."""

    todo: np.ndarray | None
    added: int
    changed: int
    removed: dict[int, list[str]]
    kept: int

    @property
    def n_removed(self) -> int:
        return sum(map(len, self.removed.values()))


def build_sharded(
    corpus: str | os.PathLike[str],
    folder: str | os.PathLike[str],
    *,
    model: str | None = None,
    config: CascadeConfig | None = None,
    spec: CorpusSpec | None = None,
    fmt: CorpusFormat | str | None = None,
    options: RayOptions | None = None,
    rebuild: bool = False,
    device: str | None = None,
    encoder_factory: Callable[[], Any] | None = None,
    show_progress_bar: bool | None = None,
) -> dict[str, Any]:
    """Build (or update) the sharded index at ``folder`` from ``corpus`` on a Ray cluster.

    ``model``: a model folder or hub name (``None``: the default model) that every actor
    loads (``encoder_factory``, a picklable callable returning an encoder, replaces that
    load); ``config``: the cascade settings of a fresh build (an update keeps the index's).
    An existing sharded index is updated (only new and changed documents are encoded)
    unless ``rebuild``. Returns a report like ``esrag build``'s.
    """
    start = time.perf_counter()
    options = options or RayOptions()
    folder = Path(folder)
    recover_folder(folder)
    fmt = CorpusFormat(fmt) if fmt is not None else None
    update = is_sharded_folder(folder) and not rebuild
    if is_index_folder(folder) and not update and not rebuild:
        raise ValueError(
            f"{folder}: holds a single-machine index; pass rebuild=True (--rebuild) to rebuild it sharded"
        )
    if folder.exists() and not is_index_folder(folder) and any(folder.iterdir()):
        raise ValueError(f"{folder}: exists and is not an esrag index; refusing to overwrite")
    encoder = encoder_factory() if encoder_factory is not None else load_encoder(model, device)
    with cluster(options.address, show_progress_bar=show_progress_bar) as ray:
        try:
            report = _run(
                ray,
                str(corpus),
                folder,
                encoder,
                model,
                config,
                spec or CorpusSpec(),
                fmt,
                options,
                update,
                device,
                encoder_factory,
            )
        except Exception as exc:
            cause = original_error(exc)
            if cause is exc:
                raise
            raise cause.with_traceback(None) from None
    report["seconds"] = time.perf_counter() - start
    return report


def _run(
    ray: Any,
    corpus: str,
    folder: Path,
    encoder: Any,
    model: str | None,
    config: CascadeConfig | None,
    spec: CorpusSpec,
    fmt: CorpusFormat | None,
    options: RayOptions,
    update: bool,
    device: str | None,
    factory: Callable[[], Any] | None,
) -> dict[str, Any]:
    docs = (
        ray.data.from_items([{"unit": 0}])
        .map_batches(ReadCorpus(corpus, spec, fmt), batch_size=None)
        .materialize()
    )
    current = read_shardset(folder) if update else None
    if current is not None:
        config = _index_config(folder, encoder)
        plan = _diff(ray, docs, folder, current)
        first_id, generation = current.next_id, current.generation + 1
    else:
        config = config or CascadeConfig()
        plan = _Plan(None, docs.count(), 0, {}, 0)
        first_id, generation = 0, 1
    adapter = EmbedderAdapter(encoder, config)
    identity = identity_fields(adapter)
    shards = len(current.shards) if current is not None else options.shards
    if current is not None and not (plan.added or plan.changed or plan.n_removed):
        return _report("up to date", folder, config, current.count, plan, shards)
    encoded = _encode(ray, docs, plan, first_id, shards, config, model, device, options, factory)
    if current is not None:  # every changed shard starts from its previous folder
        manifest = _write(ray, encoded, folder, None, shards, generation, identity, plan, first_id, current)
        return _report("updated", folder, config, manifest.count, plan, shards)
    seed = _fit(encoded, config, adapter)
    with atomic_folder(folder) as tmp:
        manifest = _write(ray, encoded, tmp, seed, shards, generation, identity, plan, first_id, None)
    return _report("built", folder, config, manifest.count, plan, shards)


def _index_config(folder: Path, encoder: Any) -> CascadeConfig:
    """The settings of the sharded index at ``folder`` (checking that ``encoder`` is its model)."""
    check = ModelCheck(folder, encoder)
    states, _ = load_shards(folder, verify=False, check=check)
    return states[0].config


def _diff(ray: Any, docs: Any, folder: Path, current: ShardSetManifest) -> _Plan:
    """New, changed, removed and kept documents against the stored content hashes."""
    task = ray.remote(stored_hashes)
    stored_parts = ray.get([task.remote(str(folder / e.path)) for e in current.shards])
    stored = {i: h for ids, hashes in stored_parts for i, h in zip(ids, hashes, strict=True)}
    shard_of_stored = {i: s for s, (ids, _) in enumerate(stored_parts) for i in ids}
    table = docs.select_columns(["id", "hash", "seq"]).to_pandas()
    todo, added, changed, seen = [], 0, 0, set()
    for doc_id, digest, seq in zip(table["id"], table["hash"], table["seq"], strict=True):
        seen.add(doc_id)
        old = stored.get(doc_id)
        if old != digest:
            todo.append(seq)
            added += old is None
            changed += old is not None
    removed: dict[int, list[str]] = {}
    for doc_id, shard in shard_of_stored.items():
        if doc_id not in seen:
            removed.setdefault(shard, []).append(doc_id)
    kept = len(table) - len(todo)
    return _Plan(np.sort(np.asarray(todo, dtype=np.int64)), added, changed, removed, kept)


def _encode(
    ray: Any,
    docs: Any,
    plan: _Plan,
    first_id: int,
    shards: int,
    config: CascadeConfig,
    model: str | None,
    device: str | None,
    options: RayOptions,
    factory: Callable[[], Any] | None,
) -> Any:
    """The documents to encode, with coarse ids, shards and vectors (materialised)."""
    cpus = int(ray.cluster_resources().get("CPU", 1))
    threads = options.threads_per_actor or max(1, cpus // options.actors)
    if device is None and options.gpus_per_actor > 0:
        device = "cuda"
    blocks = max(2 * options.actors, -(-docs.count() // (4 * options.batch_size)))
    docs = docs.repartition(blocks).materialize()  # before the actors hold the CPUs
    return docs.map_batches(
        Encode,
        fn_constructor_kwargs={
            "config": config.to_dict(),
            "model": model,
            "device": device,
            "threads": threads,
            "batch_size": options.batch_size,
            "factory": factory,
            "annotate": Annotate(plan.todo, first_id, shards),
        },
        batch_size=options.batch_size * 4,
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=options.actors),
        num_cpus=threads,
        num_gpus=options.gpus_per_actor or None,
    ).materialize()


def _fit(encoded: Any, config: CascadeConfig, adapter: EmbedderAdapter) -> ShardSeed:
    """The shared seed: the coarse stage fitted on the first ``train_size`` documents (by coarse id)."""
    limit = config.train_size
    sample = encoded.map_batches(
        lambda b: {k: v[b["cid"] < limit] for k, v in b.items()}, batch_format="numpy"
    )
    parts = list(sample.iter_batches(batch_format="numpy", batch_size=None))
    rows = {name: np.concatenate([p[name] for p in parts]) for name in parts[0]}
    order = np.argsort(rows["cid"], kind="stable")
    batch = doc_batch({name: column[order] for name, column in rows.items()})
    fitted = st.new_state(config, [batch], same_vectors=adapter.same_vectors)
    return ShardSeed.of(fitted)


def _write(
    ray: Any,
    encoded: Any,
    target: Path,
    seed: ShardSeed | None,
    shards: int,
    generation: int,
    identity: dict[str, Any],
    plan: _Plan,
    first_id: int,
    current: ShardSetManifest | None,
) -> ShardSetManifest:
    """Write every shard that changes (tasks), then the top-level manifest."""
    previous = {} if current is None else {i: str(target / e.path) for i, e in enumerate(current.shards)}
    writer = ShardWrite(seed, str(target), generation, identity, previous, plan.removed)
    written = []
    if encoded.count():
        groups = encoded.groupby("shard").map_groups(
            write_group, fn_kwargs={"writer": writer}, batch_format="numpy"
        )
        written = groups.take_all()
    paths = {int(r["shard"]): Path(str(r["path"])) for r in written}
    rest = [s for s in range(shards) if s not in paths and (current is None or s in plan.removed)]
    task = ray.remote(write_shard)
    pending = [
        task.remote(
            seed, str(target), s, generation, identity, previous.get(s), plan.removed.get(s, []), None
        )
        for s in rest
    ]
    for done in ray.get(pending):
        paths[done["shard"]] = Path(done["path"])
    entries = [(s, paths.get(s), None) for s in range(shards)]
    next_id = first_id + plan.added + plan.changed
    return write_shards(target, entries, identity, generation=generation, next_id=next_id, reuse=current)


def _report(
    action: str, folder: Path, config: CascadeConfig, docs: int, plan: _Plan, shards: int
) -> dict[str, Any]:
    return {
        "action": action,
        "index": str(folder),
        "docs": docs,
        "added": plan.added,
        "updated": plan.changed,
        "deleted": plan.n_removed,
        "unchanged": plan.kept,
        "encoded": plan.added + plan.changed,
        "shards": shards,
        "config": config.to_dict(),
    }
