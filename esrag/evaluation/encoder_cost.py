"""What an encoder pass to each layer costs on this machine: measured milliseconds and estimated
FLOPs, per query (one at a time, as a search pays it) and per document (batched, as ingest
pays it).

Queries are timed one by one through :meth:`EspressoEncoder.encode` with a single view at
the layer (tokenisation, the pass up to that layer, pooling), with the layers interleaved
query by query so that drift on a shared machine spreads over all of them; documents are
timed as batched passes over a sample. Torch keeps its own thread setting (recorded).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from esrag._arrays import percentile
from esrag.evaluation.cost import EncoderShape, encoder_flops

__all__ = ["EncoderCost", "elastic_encoder", "measure_encoder_cost", "token_counts"]

log = logging.getLogger(__name__)


def elastic_encoder(embedder: Any) -> Any | None:
    """The ESE encoder inside ``embedder`` (itself, or a wrapper's ``.encoder``), else ``None``."""
    for candidate in (embedder, getattr(embedder, "encoder", None)):
        if all(
            hasattr(candidate, name) for name in ("num_layers", "hidden_size", "tokenizer", "model", "encode")
        ):
            return candidate
    return None


def token_counts(encoder: Any, texts: Sequence[str]) -> list[int]:
    """Each text's token count as the encoder sees it (special tokens in, truncated to ``max_length``)."""
    if not texts:
        return []
    encoded = encoder.tokenizer(list(texts), truncation=True, max_length=encoder.max_length)
    return [len(ids) for ids in encoded["input_ids"]]


@dataclass(frozen=True)
class EncoderCost:
    """Per-layer cost of the encoder pass: ``layer -> value`` maps (FLOPs and milliseconds).

    ``query_ms`` are p50 (and ``query_ms_p95``) of single-query passes; ``doc_ms`` are
    milliseconds per document of batched passes. The ms maps are empty when nothing was timed.
    """

    shape: EncoderShape
    query_flops: dict[int, float]
    doc_flops: dict[int, float]
    query_ms: dict[int, float] = field(default_factory=dict)
    query_ms_p95: dict[int, float] = field(default_factory=dict)
    doc_ms: dict[int, float] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)

    def query(self, layer: int) -> tuple[float, float]:
        """(FLOPs, p50 ms) of one query's pass to ``layer`` (ms 0.0 when untimed)."""
        return self.query_flops[layer], self.query_ms.get(layer, 0.0)

    def document(self, layer: int) -> tuple[float, float]:
        """(FLOPs, ms) of one document's pass to ``layer`` (ms 0.0 when untimed)."""
        return self.doc_flops[layer], self.doc_ms.get(layer, 0.0)

    def to_json(self) -> dict[str, Any]:
        """Every map keyed by layer (as a string), the shape and the settings."""

        def keyed(values: dict[int, float], digits: int) -> dict[str, float]:
            return {str(layer): round(value, digits) for layer, value in sorted(values.items())}

        return {
            "shape": vars(self.shape),
            "query_flops": keyed(self.query_flops, 0),
            "query_ms_p50": keyed(self.query_ms, 3),
            "query_ms_p95": keyed(self.query_ms_p95, 3),
            "doc_flops": keyed(self.doc_flops, 0),
            "doc_ms": keyed(self.doc_ms, 3),
            "settings": self.settings,
        }


def _time_queries(encoder: Any, queries: Sequence[str], layers: list[int]) -> dict[int, list[float]]:
    hidden = encoder.hidden_size
    for layer in layers:  # warm-up
        encoder.encode([queries[0]], [(layer, hidden)], batch_size=1, show_progress_bar=False)
    times: dict[int, list[float]] = {layer: [] for layer in layers}
    for text in queries:
        for layer in layers:
            start = time.perf_counter()
            encoder.encode([text], [(layer, hidden)], batch_size=1, show_progress_bar=False)
            times[layer].append((time.perf_counter() - start) * 1000.0)
    return times


def _time_documents(
    encoder: Any, docs: Sequence[str], layers: Iterable[int], batch_size: int
) -> dict[int, float]:
    out = {}
    for layer in layers:
        start = time.perf_counter()
        encoder.encode(
            list(docs), [(layer, encoder.hidden_size)], batch_size=batch_size, show_progress_bar=False
        )
        out[layer] = (time.perf_counter() - start) * 1000.0 / len(docs)
    return out


def measure_encoder_cost(
    encoder: Any,
    queries: Sequence[str],
    documents: Sequence[str],
    layers: Iterable[int],
    *,
    timing_queries: int = 50,
    timing_docs: int = 32,
    batch_size: int = 32,
) -> EncoderCost:
    """FLOPs (all ``queries``/``documents``) and measured ms (the first ``timing_queries`` queries
    one at a time, the first ``timing_docs`` documents batched) of a pass to each of ``layers``.
    """
    wanted = sorted(set(layers))
    shape = EncoderShape.of(encoder.model.config)
    q_tokens, d_tokens = token_counts(encoder, queries), token_counts(encoder, documents)
    timed_q, timed_d = list(queries[:timing_queries]), list(documents[:timing_docs])
    import torch

    times = _time_queries(encoder, timed_q, wanted) if timed_q else {}
    doc_ms = _time_documents(encoder, timed_d, wanted, batch_size) if timed_d else {}
    if times:
        log.info(
            "query pass p50 ms per layer: %s", {k: round(percentile(v, 50), 2) for k, v in times.items()}
        )
    return EncoderCost(
        shape,
        {layer: encoder_flops(shape, q_tokens, layer) for layer in wanted},
        {layer: encoder_flops(shape, d_tokens, layer) for layer in wanted},
        {layer: percentile(v, 50) for layer, v in times.items()},
        {layer: percentile(v, 95) for layer, v in times.items()},
        doc_ms,
        {
            "timing_queries": len(timed_q),
            "timing_docs": len(timed_d),
            "doc_batch_size": batch_size,
            "torch_threads": torch.get_num_threads(),
            "mean_query_tokens": float(np.mean(q_tokens)) if q_tokens else 0.0,
            "mean_doc_tokens": float(np.mean(d_tokens)) if d_tokens else 0.0,
        },
    )
