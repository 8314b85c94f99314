"""End-to-end cost of an index's searches: text in → ids out, encoder pass included.

For one search mode of an index with an embedder, :func:`end_to_end` times single queries one
at a time (the encoder pass and the search, each timed, their sum is the end-to-end time),
estimates the FLOPs of the pass (to the deepest layer the query needs, from the model's shape
and the queries' token counts) and of the search, and the ingest cost of one document (its
pass to the deepest layer documents need).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from esrag._arrays import percentile
from esrag.evaluation.cost import EncoderShape, cascade_flops, encoder_flops, fine_flops, query_map_flops
from esrag.evaluation.encoder_cost import elastic_encoder, token_counts

__all__ = ["EndToEnd", "end_to_end", "search_flops"]

_INGEST_SAMPLE = 200
"""Stored documents whose token counts estimate the ingest FLOPs (the first ones)."""


@dataclass(frozen=True)
class EndToEnd:
    """What one query costs end to end in one search mode, and what one document costs to ingest."""

    query_depth: int | None
    """Deepest layer the query's pass runs (``None``: plain embeddings)."""
    ms_p50: float
    ms_p95: float
    encoder_ms_p50: float
    search_ms_p50: float
    encoder_flops: float
    search_flops: float
    ingest_depth: int | None
    ingest_flops_per_doc: float
    timed_queries: int

    @property
    def flops(self) -> float:
        """Encoder pass + search, FLOPs per query."""
        return self.encoder_flops + self.search_flops

    def to_json(self) -> dict[str, Any]:
        """Every field plus the FLOPs sum, rounded."""
        out = {k: round(v, 4) if isinstance(v, float) else v for k, v in asdict(self).items()}
        return {**out, "flops": round(self.flops)}


def search_flops(index: Any, mode: str, shortlist: int) -> float:
    """Estimated FLOPs of one search of ``index`` in ``mode`` (query map + transform + coarse + rerank)."""
    n, stats, config = len(index), index.stats(), index.config
    if mode == "fine":
        return fine_flops(n, stats["fine_dim"])
    qmap = index.query_map
    mapped = 0.0
    if qmap is not None and qmap.input_dim is not None:
        mapped = query_map_flops(
            qmap.kind.value, qmap.exact_source, qmap.input_dim, stats["source_dim"], stats["fine_dim"]
        )
    total = cascade_flops(
        index_type=config.index_type,
        n_docs=n,
        transform=stats["transform"],
        source_dim=stats["source_dim"],
        coarse_dim=stats["coarse_dim"],
        fine_dim=stats["fine_dim"] if mode == "cascade" else 0,
        shortlist=shortlist,
        nprobe=config.nprobe,
        ef_search=config.ef_search,
    )
    return mapped + total


def _timed(
    index: Any, texts: Sequence[str], mode: str, k: int, shortlist: int, full: bool
) -> tuple[list, list]:
    """(encoder ms, end-to-end ms) of each text, one query at a time."""

    def once(text: str) -> tuple[float, float]:
        start = time.perf_counter()
        if mode == "coarse":
            source, fine = index.encode_query_sources([text]), None
        else:
            source, fine = index.encode_queries([text], full_depth=full)
        encoded = time.perf_counter()
        index.search_embeddings(source, fine, k=k, shortlist=shortlist, mode=mode)
        return (encoded - start) * 1000.0, (time.perf_counter() - start) * 1000.0

    if texts:
        once(texts[0])  # warm-up
    pairs = [once(text) for text in texts]
    return [p[0] for p in pairs], [p[1] for p in pairs]


def end_to_end(
    index: Any,
    texts: Sequence[str],
    *,
    mode: str,
    k: int,
    shortlist: int,
    timing_queries: int = 200,
    full_depth: bool = False,
) -> EndToEnd:
    """End-to-end cost of ``index``'s ``mode`` searches of ``texts`` (``full_depth``: queries
    encoded with the documents' views, the full-depth reference of a shallow-query index).
    """
    encoder = elastic_encoder(index.embedder)
    depth = index.query_depth(mode, full_depth=full_depth)
    ingest_depth = index.query_depth("cascade", full_depth=True)
    enc_ms, e2e_ms = _timed(index, list(texts[:timing_queries]), mode, k, shortlist, full_depth)
    enc_flops = ingest_flops = 0.0
    if encoder is not None and depth is not None:
        shape = EncoderShape.of(encoder.model.config)
        enc_flops = encoder_flops(shape, token_counts(encoder, list(texts)), depth)
        docs = [d.text for d in index.get_by_ids(index.ids()[:_INGEST_SAMPLE])]
        ingest_flops = encoder_flops(shape, token_counts(encoder, docs), ingest_depth or 0)
    search_ms = [total - enc for enc, total in zip(enc_ms, e2e_ms, strict=True)]
    return EndToEnd(
        depth,
        percentile(e2e_ms, 50),
        percentile(e2e_ms, 95),
        percentile(enc_ms, 50),
        percentile(search_ms, 50),
        enc_flops,
        search_flops(index, mode, shortlist),
        ingest_depth,
        ingest_flops,
        len(e2e_ms),
    )
