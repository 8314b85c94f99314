"""Shard states of a sharded index: the shared seed they start from, saving and loading a
set of them (through the single-index format, one folder per shard, see
:mod:`esrag.index.shardset`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from esrag._io import atomic_folder, recover_folder
from esrag.errors import IndexFormatError
from esrag.index.coarse import CoarseIndex
from esrag.index.config import CascadeConfig
from esrag.index.docstore import DocStore
from esrag.index.fine import FineStore
from esrag.index.format import Manifest, load_state, read_manifest, save_state
from esrag.index.rows import RowMap
from esrag.index.shardset import (
    ROUTING,
    SHARDSET_FORMAT_VERSION,
    ShardSetManifest,
    is_sharded_folder,
    new_shard_folder,
    read_shardset,
    remove_unlisted,
    shard_entry,
    write_shardset,
)
from esrag.index.state import IndexState

__all__ = ["ShardSeed", "load_shards", "save_shards", "write_shards"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, eq=False)
class ShardSeed:
    """What every shard starts from: the settings, the fitted transform and the trained,
    empty coarse index (serialised, so a seed can be shipped to a worker).
    """

    config: CascadeConfig
    transform: Any
    coarse: bytes
    fine_dim: int

    @classmethod
    def of(cls, state: IndexState) -> ShardSeed:
        """The seed of a freshly fitted, still empty state (:func:`esrag.index.state.new_state`)."""
        return cls(state.config, state.transform, state.coarse.empty_copy().to_bytes(), state.fine_dim)

    def empty_state(self) -> IndexState:
        """A new empty shard state."""
        cfg = self.config
        coarse = CoarseIndex.from_bytes(
            self.coarse,
            dim=self.transform.dim,
            index_type=cfg.index_type,
            nprobe=cfg.nprobe,
            ef_search=cfg.ef_search,
            use_gpu=cfg.use_gpu,
        )
        fine = FineStore(self.fine_dim, cfg.fine_dtype)
        return IndexState(cfg, self.transform, coarse, fine, DocStore(), RowMap())


def write_shards(
    folder: Path,
    shards: Sequence[tuple[int, Path | None, IndexState | None]],
    identity: dict[str, Any],
    *,
    generation: int,
    next_id: int,
    reuse: ShardSetManifest | None = None,
) -> ShardSetManifest:
    """Write the listed shards into ``folder`` and then its top-level manifest.

    ``shards``: ``(shard, written folder or None, state or None)`` per shard, in order: a
    state is saved into the generation's new folder, an already written folder (by a worker)
    is listed as it is, and ``None, None`` keeps the shard of ``reuse`` (the folder's current
    manifest).
    """
    entries = []
    for shard, written, state in shards:
        if state is not None:
            written = new_shard_folder(folder, shard, generation)
            save_state(state, written, identity)
        if written is not None:
            entries.append(shard_entry(folder, written, _count(written)))
        elif reuse is not None:
            entries.append(reuse.shards[shard])
        else:
            raise ValueError(f"shard {shard}: nothing to write and no previous shard to keep")
    manifest = ShardSetManifest(
        format_version=SHARDSET_FORMAT_VERSION,
        routing=ROUTING,
        generation=generation,
        next_id=int(next_id),
        count=sum(e.count for e in entries),
        shards=tuple(entries),
    )
    write_shardset(folder, manifest)
    remove_unlisted(folder, manifest)
    return manifest


def _count(shard_folder: Path) -> int:
    return read_manifest(shard_folder, verify=False).count


def save_shards(
    states: Sequence[IndexState],
    folder: str | os.PathLike[str],
    identity: dict[str, Any],
    *,
    next_id: int,
    clean: Callable[[int], bool] = lambda shard: False,
    current: ShardSetManifest | None = None,
) -> ShardSetManifest:
    """Save shard states as a sharded folder.

    Into an existing sharded folder whose manifest is ``current`` (the one the states were
    loaded from or last saved as), only the shards that are not ``clean`` are written, as the
    next generation. Anything else at ``folder`` (nothing, a single index, an older state of
    this one) is replaced as a whole, atomically.
    """
    folder = Path(folder)
    recover_folder(folder)
    on_disk = read_shardset(folder) if is_sharded_folder(folder) else None
    if current is not None and on_disk is not None and on_disk.generation == current.generation:
        shards = [(i, None, None if clean(i) else s) for i, s in enumerate(states)]
        return write_shards(
            folder, shards, identity, generation=current.generation + 1, next_id=next_id, reuse=on_disk
        )
    with atomic_folder(folder) as tmp:
        written = write_shards(
            tmp, [(i, None, s) for i, s in enumerate(states)], identity, generation=1, next_id=next_id
        )
    return written


def load_shards(
    folder: str | os.PathLike[str],
    *,
    verify: bool = True,
    mmap: bool = True,
    check: Callable[[Manifest, CascadeConfig], None] | None = None,
) -> tuple[list[IndexState], ShardSetManifest]:
    """Read a sharded folder into shard states; every problem is an :class:`IndexFormatError`."""
    folder = Path(folder)
    recover_folder(folder)
    for attempt in range(3):  # a concurrent save may delete the shards we were about to read
        manifest = read_shardset(folder)
        try:
            states = [
                load_state(folder / entry.path, verify=verify, mmap=mmap, check=check)[0]
                for entry in manifest.shards
            ]
        except (IndexFormatError, FileNotFoundError):
            if attempt == 2 or read_shardset(folder).generation == manifest.generation:
                raise
            continue
        _check_shared(folder, manifest, states)
        return states, manifest
    raise AssertionError("unreachable")  # pragma: no cover


def _check_shared(folder: Path, manifest: ShardSetManifest, states: Sequence[IndexState]) -> None:
    """Every shard must have the same settings and transform, and the listed counts."""
    first = states[0]
    for i, (entry, state) in enumerate(zip(manifest.shards, states, strict=True)):
        where = folder / entry.path
        if len(state) != entry.count:
            raise IndexFormatError(
                f"{where}: holds {len(state)} documents, the top-level manifest says {entry.count}"
            )
        same_transform = state.transform.describe() == first.transform.describe() and (
            state.transform.matrix is None or np.array_equal(state.transform.matrix, first.transform.matrix)
        )
        if state.config != first.config or not same_transform:
            raise IndexFormatError(f"{where}: shard {i} has other settings or another transform than shard 0")
        if state.rows.next_coarse_id > manifest.next_id:
            raise IndexFormatError(f"{where}: coarse ids beyond the top-level manifest's next_id")
