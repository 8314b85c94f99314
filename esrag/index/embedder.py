"""Uniform access to the two kinds of embedders an index accepts.

* an elastic ESE encoder (``esrag.encoder.EspressoEncoder``, or a wrapper exposing one as
  ``.encoder``): one ``encode`` pass yields the coarse source view (Lc, hidden) and the fine
  view (Ld, dd);
* any LangChain ``Embeddings``: its L2-normalised vector is both the coarse source and the
  fine vector.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import Any

import numpy as np

from esrag.encoder.views import View, validate_views
from esrag.index.config import CascadeConfig
from esrag.index.transforms import l2_normalize

__all__ = ["EmbedderAdapter", "is_elastic"]


def is_elastic(obj: object) -> bool:
    """Duck-typed check for an ESE encoder (``num_layers``, ``hidden_size``, ``encode``)."""
    return all(hasattr(obj, name) for name in ("num_layers", "hidden_size", "encode", "default_view"))


def _unwrap(embedder: Any) -> Any:
    if is_elastic(embedder):
        return embedder
    inner = getattr(embedder, "encoder", None)
    return inner if inner is not None and is_elastic(inner) else embedder


def _config_fingerprint(embedder: Any) -> str:
    kind = type(embedder)
    payload: dict[str, Any] = {"class": f"{kind.__module__}.{kind.__qualname__}"}
    dump = getattr(embedder, "model_dump", None)
    if callable(dump):
        try:
            payload["fields"] = dump()
        except Exception:  # pragma: no cover - exotic models
            payload["fields"] = None
    text = json.dumps(payload, sort_keys=True, default=repr)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class EmbedderAdapter:
    """Encodes documents and queries into (coarse source, fine) float32 arrays."""

    def __init__(self, embedder: Any, config: CascadeConfig) -> None:
        self.original = embedder
        self.model = _unwrap(embedder)
        self.elastic = is_elastic(self.model)
        if self.elastic:
            enc = self.model
            layer = config.coarse_layer or int(enc.num_layers)
            fine = config.fine_view or enc.default_view
            self.source_view, self.fine_view = (
                validate_views(
                    [View(layer, int(enc.hidden_size)), fine],
                    int(enc.num_layers),
                    int(enc.hidden_size),
                )
                if View(layer, int(enc.hidden_size)) != fine
                else (fine, fine)
            )
            self.source_dim: int | None = self.source_view.dim
            self.fine_dim: int | None = self.fine_view.dim
            self.name = str(getattr(enc, "name", type(enc).__name__))
            self.kind = "elastic"
        else:
            if not (hasattr(self.model, "embed_documents") and hasattr(self.model, "embed_query")):
                raise TypeError(
                    "embedder must be an esrag EspressoEncoder or a LangChain Embeddings, "
                    f"got {type(embedder).__name__}"
                )
            self.source_view = self.fine_view = None
            self.source_dim = self.fine_dim = None  # known after the first call
            self.name = f"{type(self.model).__module__}.{type(self.model).__qualname__}"
            self.kind = "embeddings"

    @property
    def fingerprint(self) -> str:
        if self.elastic:
            return str(self.model.fingerprint)
        return _config_fingerprint(self.model)

    @property
    def same_vectors(self) -> bool:
        """Whether the coarse source and the fine vector are the same vector."""
        return not self.elastic or self.source_view == self.fine_view

    def _views(self) -> list[View]:
        assert self.source_view is not None and self.fine_view is not None
        if self.source_view == self.fine_view:
            return [self.fine_view]
        return [self.source_view, self.fine_view]

    def _elastic(self, texts: Sequence[str], batch_size: int) -> tuple[np.ndarray, np.ndarray]:
        arrays = self.model.encode(
            list(texts), views=self._views(), batch_size=batch_size, show_progress_bar=False
        )
        arrays = [np.asarray(a, dtype=np.float32) for a in arrays]
        return (arrays[0], arrays[0]) if len(arrays) == 1 else (arrays[0], arrays[1])

    def _plain(self, vectors: list[list[float]]) -> tuple[np.ndarray, np.ndarray]:
        arr = np.asarray(vectors, dtype=np.float32)
        if arr.ndim != 2:
            raise ValueError(f"the embeddings returned an array of shape {arr.shape}, expected 2-D")
        arr = l2_normalize(arr)
        return arr, arr

    def encode_documents(
        self, texts: Sequence[str], *, batch_size: int = 64
    ) -> tuple[np.ndarray, np.ndarray]:
        if self.elastic:
            return self._elastic(texts, batch_size)
        return self._plain(self.model.embed_documents(list(texts)))

    def encode_queries(self, texts: Sequence[str], *, batch_size: int = 64) -> tuple[np.ndarray, np.ndarray]:
        if self.elastic:
            return self._elastic(texts, batch_size)
        return self._plain([self.model.embed_query(t) for t in texts])
