"""Machine-independent cost: estimated floating-point operations of the encoder pass and the search.

End to end, a query costs its encoder pass (to the deepest layer it needs: the fine layer for
a full-depth cascade, the query layer for a shallow-query one, the coarse layer in coarse
mode) plus the search; a document costs its pass to the deepest layer documents need. A
multiply-add counts as 2 FLOPs.

Encoder pass (BERT-style layer, ``n`` tokens, width ``h``, feed-forward width ``i``, ``a``
heads): the Q, K, V and output projections ``8·n·h²``, the feed-forward ``4·n·h·i``, the
attention scores and their weighted sum ``4·n²·h`` (each head works on ``h/a`` dims), and
scaling + softmax of the ``a·n²`` scores at 4 FLOPs each; embeddings, layer norms, GELU
and pooling are lower order and left out. Per text, then averaged over the texts (the
``n²`` term makes that differ from the cost at the mean length).

Search, approximate index models:

- ``Flat``: every document scored, ``2·N·d``;
- ``HNSW<M>``: about ``ef·2M`` distance computations on the bottom layer, ``ef`` raised to
  at least the shortlist;
- ``IVF<nlist>,Flat``: ``nlist`` centroids plus ``N·nprobe/nlist`` documents;
- ``IVF<nlist>,PQ<m>``: as IVF for the centroids, a ``256·d`` lookup table per probed list
  and ``m`` additions per scanned code.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "EncoderShape",
    "cascade_flops",
    "coarse_flops",
    "encoder_flops",
    "fine_flops",
    "layer_flops",
    "query_map_flops",
    "transform_flops",
]

_HNSW = re.compile(r"HNSW(\d+)", re.IGNORECASE)
_IVF = re.compile(r"IVF(\d+)", re.IGNORECASE)
_PQ = re.compile(r"PQ(\d+)", re.IGNORECASE)


@dataclass(frozen=True)
class EncoderShape:
    """The sizes of a BERT-style encoder that its cost depends on."""

    layers: int
    hidden: int
    intermediate: int
    heads: int

    @classmethod
    def of(cls, config: Any) -> EncoderShape:
        """From a Hugging Face model config (``num_hidden_layers``, ``hidden_size``, ...)."""
        return cls(
            int(config.num_hidden_layers),
            int(config.hidden_size),
            int(config.intermediate_size),
            int(config.num_attention_heads),
        )


def layer_flops(shape: EncoderShape, tokens: int) -> float:
    """One transformer layer over a sequence of ``tokens`` tokens (see the module docstring)."""
    n, h = float(tokens), float(shape.hidden)
    return 8 * n * h * h + 4 * n * h * shape.intermediate + 4 * n * n * h + 4 * shape.heads * n * n


def encoder_flops(shape: EncoderShape, tokens: Sequence[int], layer: int) -> float:
    """Mean FLOPs of one text's pass through the first ``layer`` layers (``tokens``: each text's
    token count, special tokens included; a single text per pass, no padding).
    """
    if not 0 <= layer <= shape.layers:
        raise ValueError(f"layer {layer} is outside 0..{shape.layers}")
    if not tokens:
        return 0.0
    return layer * sum(layer_flops(shape, n) for n in tokens) / len(tokens)


def query_map_flops(
    kind: str | None, exact_source: bool, input_dim: int, source_dim: int, fine_dim: int
) -> float:
    """Applying a shallow query's ridge maps (``kind`` ``"ridge"``; ``none`` and full depth are free)."""
    if kind != "ridge":
        return 0.0
    return 2.0 * input_dim * fine_dim + (0.0 if exact_source else 2.0 * input_dim * source_dim)


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
