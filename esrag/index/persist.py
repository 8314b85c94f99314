"""Saving and loading a :class:`~esrag.index.cascade.CascadeIndex` (see :mod:`.storage`)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from esrag.index.coarse import CoarseIndex
from esrag.index.config import CascadeConfig
from esrag.index.docstore import DocStore
from esrag.index.embedder import EmbedderAdapter
from esrag.index.fine import FineStore
from esrag.index.storage import (
    FORMAT_VERSION,
    IndexFormatError,
    Manifest,
    ModelMismatchError,
    read_manifest,
    write_index_folder,
)
from esrag.index.transforms import FittedTransform

if TYPE_CHECKING:
    from esrag.index.cascade import CascadeIndex

__all__ = ["load_index", "save_index"]

logger = logging.getLogger(__name__)

COARSE_FILE = "coarse.faiss"
FINE_FILE = "fine.npy"
IDS_FILE = "ids.npy"
TOMBSTONES_FILE = "tombstones.npy"
DOCS_FILE = "docs.jsonl"


def save_index(index: CascadeIndex, folder: Path) -> Manifest:
    """Write ``index`` (caller holds its read lock) atomically into ``folder``."""
    coarse, fine, transform = index._coarse, index._fine, index._transform
    if coarse is None or fine is None or transform is None:
        raise ValueError("cannot save an index that has never held documents (nothing is fitted)")
    rows = np.flatnonzero(index._alive[: len(fine)])
    adapter = index._adapter

    def write(tmp: Path) -> None:
        coarse.write(tmp / COARSE_FILE)
        fine.write(tmp / FINE_FILE, rows)
        np.save(tmp / IDS_FILE, index._id_of_row[rows], allow_pickle=False)
        dead = np.array(sorted(coarse.tombstones), dtype=np.int64)
        np.save(tmp / TOMBSTONES_FILE, dead, allow_pickle=False)
        index._docs.write(tmp / DOCS_FILE, rows)
        transform.save(tmp)

    manifest = Manifest(
        format_version=FORMAT_VERSION,
        model_name=adapter.name if adapter else None,
        model_fingerprint=adapter.fingerprint if adapter else None,
        embedder_kind=adapter.kind if adapter else "none",
        coarse_source_view=_view(adapter.source_view) if adapter else None,
        fine_view=_view(adapter.fine_view) if adapter else None,
        source_dim=int(transform.source_dim),
        fine_dim=int(fine.dim),
        coarse_dim=int(transform.dim),
        transform=transform.kind.value,
        index_type=index.config.index_type,
        config=index.config.to_dict(),
        count=int(rows.size),
        next_id=int(index._next_id),
        tombstones=len(coarse.tombstones),
    )
    return write_index_folder(folder, write, manifest)


def _view(view: Any) -> tuple[int, int] | None:
    return None if view is None else (int(view.layer), int(view.dim))


def _check_model(folder: Path, manifest: Manifest, adapter: EmbedderAdapter) -> None:
    where = folder / "manifest.json"
    if manifest.embedder_kind not in ("none", adapter.kind):
        raise ModelMismatchError(
            f"{where}: the index was built with a {manifest.embedder_kind} embedder "
            f"({manifest.model_name!r}), got a {adapter.kind} one ({adapter.name!r})"
        )
    if manifest.model_fingerprint is None:
        logger.warning("%s records no model fingerprint; cannot verify the query encoder", where)
    elif adapter.fingerprint != manifest.model_fingerprint:
        raise ModelMismatchError(
            f"{where}: the index was built with model {manifest.model_name!r} "
            f"(fingerprint {manifest.model_fingerprint[:16]}…), but the query encoder "
            f"{adapter.name!r} has fingerprint {adapter.fingerprint[:16]}…; "
            "load it with the index's model or rebuild the index"
        )
    for label, recorded, actual in (
        ("coarse source view", manifest.coarse_source_view, _view(adapter.source_view)),
        ("fine view", manifest.fine_view, _view(adapter.fine_view)),
    ):
        if recorded is not None and actual is not None and tuple(recorded) != actual:
            raise ModelMismatchError(f"{where}: {label} is {recorded}, the encoder gives {actual}")


def _load_ids(path: Path, count: int | None) -> np.ndarray:
    try:
        arr = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise IndexFormatError(f"{path}: unreadable ids ({exc})") from None
    if arr.dtype != np.int64 or arr.ndim != 1 or (count is not None and arr.size != count):
        raise IndexFormatError(f"{path}: expected int64 ids of shape ({count},), got {arr.dtype} {arr.shape}")
    return arr


def load_index(
    cls: type[CascadeIndex], folder: Path, embedder: Any | None, *, verify: bool, mmap: bool
) -> CascadeIndex:
    manifest = read_manifest(folder, verify=verify)
    try:
        config = CascadeConfig.from_dict(manifest.config)
    except (TypeError, ValueError) as exc:
        raise IndexFormatError(f"{folder / 'manifest.json'}: bad config ({exc})") from None
    index = cls(None, config)
    if embedder is not None:
        adapter = EmbedderAdapter(embedder, config)
        _check_model(folder, manifest, adapter)
        adapter.source_dim, adapter.fine_dim = manifest.source_dim, manifest.fine_dim
        index._adapter = adapter
    try:
        transform = FittedTransform.load(folder)
        fine = FineStore.read(
            folder / FINE_FILE,
            dim=manifest.fine_dim,
            dtype=config.fine_dtype,
            count=manifest.count,
            mmap=mmap,
        )
        docs = DocStore.read(folder / DOCS_FILE, count=manifest.count)
    except ValueError as exc:
        raise IndexFormatError(str(exc)) from None
    if (transform.source_dim, transform.dim) != (manifest.source_dim, manifest.coarse_dim):
        raise IndexFormatError(f"{folder / 'transform.json'}: dims disagree with the manifest")
    if transform.kind.value != manifest.transform:
        raise IndexFormatError(
            f"{folder / 'transform.json'}: transform {transform.kind.value!r} disagrees with the "
            f"manifest ({manifest.transform!r})"
        )
    ids = _load_ids(folder / IDS_FILE, manifest.count)
    tombstones = _load_ids(folder / TOMBSTONES_FILE, manifest.tombstones)
    if ids.size and (ids.min() < 0 or ids.max() >= manifest.next_id):
        raise IndexFormatError(f"{folder / IDS_FILE}: ids outside 0..{manifest.next_id - 1}")
    if np.unique(ids).size != ids.size:
        raise IndexFormatError(f"{folder / IDS_FILE}: duplicate ids")
    try:
        coarse = CoarseIndex.read(
            folder / COARSE_FILE,
            dim=manifest.coarse_dim,
            index_type=config.index_type,
            nprobe=config.nprobe,
            ef_search=config.ef_search,
            use_gpu=config.use_gpu,
            tombstones=tombstones,
        )
    except ValueError as exc:
        raise IndexFormatError(str(exc)) from None
    if coarse.ntotal - len(coarse.tombstones) != manifest.count:
        raise IndexFormatError(
            f"{folder / COARSE_FILE}: holds {coarse.ntotal - len(coarse.tombstones)} live vectors, "
            f"the manifest says {manifest.count}"
        )
    index._transform, index._coarse, index._fine, index._docs = transform, coarse, fine, docs
    index._source_dim, index._fine_dim = manifest.source_dim, manifest.fine_dim
    index._next_id = manifest.next_id
    index._alive = np.ones(manifest.count, dtype=bool)
    index._id_of_row = ids.copy()
    index._row_of_id = np.full(manifest.next_id, -1, dtype=np.int64)
    index._row_of_id[ids] = np.arange(manifest.count, dtype=np.int64)
    index.manifest = manifest
    logger.info("loaded index with %d documents from %s", manifest.count, folder)
    return index
