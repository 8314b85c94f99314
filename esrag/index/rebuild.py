"""Rebuilding the coarse stage of an index with new settings (``esrag tune``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from esrag._progress import progress
from esrag.index._inputs import check_vectors
from esrag.index.config import CascadeConfig, Transform
from esrag.index.embedder import EmbedderAdapter
from esrag.index.stages import fit_coarse
from esrag.index.transforms import l2_normalize

if TYPE_CHECKING:
    from esrag.index.cascade import CascadeIndex

__all__ = ["reconfigure_index"]


def reconfigure_index(
    index: CascadeIndex,
    *,
    coarse_layer: int | None = None,
    coarse_dim: int | None = None,
    transform: Transform | str | None = None,
    index_type: str | None = None,
    shortlist: int | None = None,
    nprobe: int | None = None,
    ef_search: int | None = None,
    coarse_source: np.ndarray | None = None,
    batch_size: int = 64,
    show_progress_bar: bool | None = None,
) -> None:
    """Rebuild the coarse stage with new settings (the fine stage is kept).

    Source vectors come from ``coarse_source`` (rows in :meth:`CascadeIndex.ids` order), else from the
    stored fine vectors when they are the same view, else by re-encoding the stored texts.
    Searches wait while the coarse stage is rebuilt.
    """
    changes = {
        name: value
        for name, value in (
            ("coarse_layer", coarse_layer),
            ("coarse_dim", coarse_dim),
            ("transform", transform),
            ("index_type", index_type),
            ("shortlist", shortlist),
            ("nprobe", nprobe),
            ("ef_search", ef_search),
        )
        if value is not None
    }
    new_cfg = index.config.replace(**changes)
    light = {"shortlist", "nprobe", "ef_search"}
    with index._lock.write():
        if index._coarse is None or (set(changes) <= light and coarse_source is None):
            index.config = new_cfg
            if index._coarse is not None:
                index._coarse.nprobe, index._coarse.ef_search = new_cfg.nprobe, new_cfg.ef_search
            if index._adapter is not None:
                index._adapter = EmbedderAdapter(index._adapter.original, new_cfg)
            return
        assert index._fine is not None
        rows = np.flatnonzero(index._alive)
        adapter = EmbedderAdapter(index._adapter.original, new_cfg) if index._adapter else None
        source = _source_vectors(index, new_cfg, adapter, rows, coarse_source, batch_size, show_progress_bar)
        source = l2_normalize(source)
        fine = index._fine.gather(rows[: new_cfg.train_size])
        transform_, coarse = fit_coarse(
            new_cfg, source, fine, same_vectors=bool(adapter and adapter.same_vectors)
        )
        ids = index._id_of_row[rows]
        for start in range(0, rows.size, 65_536):
            coarse.add(transform_(source[start : start + 65_536]), ids[start : start + 65_536])
        index.config, index._adapter = new_cfg, adapter
        index._transform, index._coarse = transform_, coarse
        index._source_dim = source.shape[1]


def _source_vectors(
    index: CascadeIndex,
    cfg: CascadeConfig,
    adapter: EmbedderAdapter | None,
    rows: np.ndarray,
    coarse_source: np.ndarray | None,
    batch_size: int,
    show_progress_bar: bool | None,
) -> np.ndarray:
    assert index._fine is not None
    if coarse_source is not None:
        return check_vectors("coarse_source", coarse_source, None, rows.size)
    if adapter is None:
        raise ValueError(
            "this index has no embedder to re-encode its texts: pass coarse_source= "
            "(coarse source vectors in ids() order)"
        )
    if adapter.same_vectors:
        return index._fine.gather(rows)
    texts = [index._docs.texts[r] for r in rows.tolist()]
    parts = []
    for start in progress(range(0, len(texts), batch_size), desc="Re-encoding", show=show_progress_bar):
        parts.append(adapter.encode_documents(texts[start : start + batch_size], batch_size=batch_size)[0])
    return np.concatenate(parts)
