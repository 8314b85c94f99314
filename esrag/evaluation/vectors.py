"""Per-layer embeddings for evaluations, and document-derived queries for label-free checks."""

from __future__ import annotations

import logging
import random
import re
from collections.abc import Sequence
from typing import Any

import numpy as np

from esrag._arrays import view_vectors

__all__ = ["encode_layers", "fine_vectors", "sample_doc_queries"]

log = logging.getLogger(__name__)


def encode_layers(
    encoder: Any,
    texts: Sequence[str],
    layers: Sequence[int] | None = None,
    *,
    batch_size: int = 32,
    cache: bool = True,
    show_progress_bar: bool | None = None,
) -> dict[int, np.ndarray]:
    """Layer → (N, hidden) float32 L2-normalised full-width embeddings.

    With ``cache`` every layer is encoded once through :func:`esrag.encoder.cache.encode_cached`
    (keyed by model and texts, so a second evaluation of the same corpus is free);
    otherwise one uncached forward pass gives the asked layers.
    """
    wanted = sorted(set(layers)) if layers is not None else list(range(1, encoder.num_layers + 1))
    if cache:
        from esrag.encoder.cache import encode_cached

        stacked = encode_cached(
            encoder, list(texts), None, batch_size=batch_size, show_progress_bar=show_progress_bar
        )
        return {layer: np.ascontiguousarray(stacked[:, layer - 1, :]) for layer in wanted}
    views = [(layer, encoder.hidden_size) for layer in wanted]
    arrays = encoder.encode(
        list(texts), views=views, batch_size=batch_size, show_progress_bar=show_progress_bar
    )
    return dict(zip(wanted, arrays, strict=True))


def fine_vectors(layer_vectors: np.ndarray, dim: int) -> np.ndarray:
    """The (layer, dim) view from full-width vectors: slice, then L2-normalise."""
    return view_vectors(layer_vectors, dim)


_SENTENCE = re.compile(r"(?<=[.!?])\s+")


def sample_doc_queries(
    texts: Sequence[str],
    n: int = 200,
    *,
    seed: int = 0,
    min_words: int = 4,
    max_words: int = 16,
) -> list[str]:
    """Pseudo-queries for label-free evaluation: a random span of words from sampled docs.

    Each query is a span of ``min_words``..``max_words`` consecutive words taken from one
    sentence of a randomly chosen document (documents shorter than ``min_words`` words are
    used whole). Deterministic for a given ``seed``.
    """
    if n < 1:
        raise ValueError(f"the number of sampled queries must be >= 1, got {n}")
    if not texts:
        raise ValueError("cannot sample queries from an empty corpus")
    rng = random.Random(seed)
    picks = rng.sample(range(len(texts)), min(n, len(texts)))
    queries: list[str] = []
    for i in picks:
        sentences = [s for s in _SENTENCE.split(texts[i]) if s.split()]
        words = rng.choice(sentences).split() if sentences else texts[i].split()
        if len(words) <= min_words:
            queries.append(" ".join(words) or texts[i])
            continue
        length = rng.randint(min_words, min(max_words, len(words)))
        start = rng.randint(0, len(words) - length)
        queries.append(" ".join(words[start : start + length]))
    return queries
