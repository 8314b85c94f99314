"""On-disk cache of every layer's full-width embeddings, for evaluations and benchmarks.

Encoding a corpus on CPU is slow; evaluations ask for many (layer, dim) views of the same
texts. The cache stores, per text, each requested layer's full-width pooled embedding,
L2-normalised; any view ``(layer, dim)`` is then ``renormalise(vectors[:, i, :dim])``
(normalising before slicing does not change the direction of the slice).
The key covers the model fingerprint, pooling, max_length, the layers and the texts, so a
different model or data never hits a stale entry. Files are plain ``.npy`` written atomically.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from esrag._arrays import view_vectors
from esrag._io import atomic_write_bytes
from esrag.encoder.encoder import EspressoEncoder

__all__ = ["cache_dir_default", "encode_cached", "view_of"]

logger = logging.getLogger(__name__)


def cache_dir_default() -> Path:
    """``$ESRAG_CACHE`` or ``~/.cache/esrag``."""
    value = os.environ.get("ESRAG_CACHE")
    return Path(value).expanduser() if value else Path.home() / ".cache" / "esrag"


def _key(encoder: EspressoEncoder, texts: Sequence[str], layers: Sequence[int]) -> str:
    digest = hashlib.sha256()
    digest.update(
        f"{encoder.fingerprint}|{encoder.pooling.value}|{encoder.max_length}|{list(layers)}|".encode()
    )
    for text in texts:
        data = text.encode("utf-8")
        digest.update(len(data).to_bytes(8, "little"))
        digest.update(data)
    return digest.hexdigest()[:32]


def encode_cached(
    encoder: EspressoEncoder,
    texts: Sequence[str],
    layers: Sequence[int] | None = None,
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    batch_size: int = 32,
    show_progress_bar: bool | None = None,
) -> np.ndarray:
    """(N, len(layers), hidden) float32: each layer's full-width, L2-normalised embedding."""
    layers = list(layers) if layers is not None else list(range(1, encoder.num_layers + 1))
    folder = Path(cache_dir) if cache_dir is not None else cache_dir_default()
    path = folder / f"emb-{_key(encoder, texts, layers)}.npy"
    expected = (len(texts), len(layers), encoder.hidden_size)
    if path.is_file():
        try:
            cached = np.load(path, allow_pickle=False)
            if cached.shape == expected and cached.dtype == np.float32:
                logger.info("embedding cache hit: %s", path)
                return cached
            logger.warning("%s has shape %s, expected %s: re-encoding", path, cached.shape, expected)
        except (ValueError, OSError) as exc:
            logger.warning("%s is unreadable (%s): re-encoding", path, exc)
    views = [(layer, encoder.hidden_size) for layer in layers]
    arrays = encoder.encode(list(texts), views, batch_size=batch_size, show_progress_bar=show_progress_bar)
    stacked = np.stack(arrays, axis=1) if len(texts) else np.empty(expected, np.float32)
    buffer = io.BytesIO()
    np.save(buffer, stacked, allow_pickle=False)
    atomic_write_bytes(path, buffer.getvalue())
    logger.info("cached %s embeddings in %s", stacked.shape, path)
    return stacked


def view_of(stacked: np.ndarray, layers: Sequence[int], layer: int, dim: int) -> np.ndarray:
    """The ``(layer, dim)`` view from :func:`encode_cached` output, re-normalised."""
    return view_vectors(stacked[:, list(layers).index(layer)], dim)
