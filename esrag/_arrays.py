"""Row-wise vector helpers shared by the index, the encoder cache and evaluation."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["l2_normalize", "percentile", "view_vectors"]


def l2_normalize(x: np.ndarray) -> np.ndarray:
    """Row-wise L2 normalisation (zero rows stay zero), as contiguous float32."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    np.maximum(norms, 1e-12, out=norms)
    return x / norms


def view_vectors(layer_vectors: np.ndarray, dim: int) -> np.ndarray:
    """The first ``dim`` coordinates of each row, re-normalised (a (layer, dim) view of
    full-width vectors: normalising before slicing does not change the slice's direction).
    """
    return l2_normalize(layer_vectors[:, :dim])


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile of ``values`` (0.0 for none), e.g. a latency p50 or p95."""
    return float(np.percentile(np.asarray(values, dtype=np.float64), q)) if len(values) else 0.0
