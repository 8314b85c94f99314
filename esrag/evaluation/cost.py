"""Machine-independent query cost: estimated floating-point operations per query.

The query encoder pass is left out: one forward pass to the fine layer serves both
stages, so it costs the same for the cascade and for the fine-only reference. A
multiply-add counts as 2 FLOPs. Approximate index models:

- ``Flat``: every document scored, ``2·N·d``;
- ``HNSW<M>``: about ``ef·2M`` distance computations on the bottom layer, ``ef`` raised to
  at least the shortlist;
- ``IVF<nlist>,Flat``: ``nlist`` centroids plus ``N·nprobe/nlist`` documents;
- ``IVF<nlist>,PQ<m>``: as IVF for the centroids, a ``256·d`` lookup table per probed list
  and ``m`` additions per scanned code.
"""

from __future__ import annotations

import re

__all__ = ["cascade_flops", "coarse_flops", "fine_flops", "transform_flops"]

_HNSW = re.compile(r"HNSW(\d+)", re.IGNORECASE)
_IVF = re.compile(r"IVF(\d+)", re.IGNORECASE)
_PQ = re.compile(r"PQ(\d+)", re.IGNORECASE)


def transform_flops(transform: str, source_dim: int, dim: int) -> float:
    """Projecting a query's coarse source vector: prefix is free, pca/adapter a matrix."""
    return 0.0 if transform == "prefix" else 2.0 * source_dim * dim


def coarse_flops(
    index_type: str,
    n_docs: int,
    dim: int,
    *,
    shortlist: int,
    nprobe: int = 16,
    ef_search: int = 128,
) -> float:
    """Estimated FLOPs of one coarse search returning ``shortlist`` candidates."""
    hnsw = _HNSW.search(index_type)
    if hnsw:
        m = int(hnsw.group(1))
        ef = max(ef_search, shortlist)
        return 2.0 * dim * min(n_docs, ef * 2 * m)
    ivf = _IVF.search(index_type)
    if ivf:
        nlist = max(1, int(ivf.group(1)))
        probes = min(nprobe, nlist)
        scanned = n_docs * probes / nlist
        centroids = 2.0 * dim * nlist
        pq = _PQ.search(index_type)
        if pq:
            return centroids + probes * 256 * 2.0 * dim + scanned * int(pq.group(1))
        return centroids + 2.0 * dim * scanned
    return 2.0 * dim * n_docs


def fine_flops(n_docs: int, fine_dim: int) -> float:
    """Exact flat search over every fine vector (the reference)."""
    return 2.0 * n_docs * fine_dim


def cascade_flops(
    *,
    index_type: str,
    n_docs: int,
    transform: str,
    source_dim: int,
    coarse_dim: int,
    fine_dim: int,
    shortlist: int,
    nprobe: int = 16,
    ef_search: int = 128,
) -> float:
    """Transform + coarse search + exact rerank of the shortlist."""
    shortlist = min(shortlist, n_docs)
    return (
        transform_flops(transform, source_dim, coarse_dim)
        + coarse_flops(
            index_type, n_docs, coarse_dim, shortlist=shortlist, nprobe=nprobe, ef_search=ef_search
        )
        + 2.0 * shortlist * fine_dim
    )
