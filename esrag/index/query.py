"""Shallow queries against deep documents: the query's encoder pass stops at ``query_layer``.

A full-depth cascade runs every query to the fine layer, because both stages score the
query's deep vectors. With a query layer ``k`` shallower than the documents' fine layer, the
pass stops at ``k`` and the query's layer-``k`` vector is brought into the two spaces the
documents live in:

* the coarse source space (layer ``Lc``, full width), which the coarse transform then maps;
  when ``Lc <= k`` the query's own layer-``Lc`` vector comes from the same (shorter) pass and
  no map is needed (``exact_source``);
* the fine space (the documents' fine view).

:class:`QueryMap` is that bridge, a plain value persisted with the index
(:mod:`esrag.index.format`): ``none`` uses the shallow vector as it is (a model whose shallow
query layer was trained for it), ``ridge`` applies closed-form ridge maps fitted at index time
on the documents' layer-``k`` vectors (captured in the pass that encodes them anyway) towards
their coarse source and fine vectors.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from esrag._arrays import l2_normalize
from esrag.encoder.views import View
from esrag.index.config import CascadeConfig, QueryMapKind, SearchMode
from esrag.index.transforms import ridge_weights

__all__ = ["LinearMap", "QueryMap", "QuerySetup", "fit_query_map", "query_setup"]


@dataclass(frozen=True)
class QuerySetup:
    """What a shallow query needs: its layer, how it is mapped, whether its coarse source is exact."""

    kind: QueryMapKind
    layer: int
    """The query layer ``k`` (1-based): the query's encoder pass stops here."""
    exact_source: bool
    """The coarse layer is at most ``k``: the query's coarse source is its own layer-``Lc`` vector."""

    @property
    def needs_fit(self) -> bool:
        """Whether fitting needs the documents' layer-``k`` vectors (``ridge``)."""
        return self.kind is QueryMapKind.RIDGE


def query_setup(config: CascadeConfig, adapter: Any | None) -> QuerySetup | None:
    """The shallow-query setup of ``config`` with ``adapter`` (``None``: queries run full depth).

    With an elastic encoder the query layer is the adapter's query view; it is shallow when it
    lies above the fine (document) layer. Without one (a vectors-only index) it is shallow
    whenever ``config.query_layer`` is set (the caller encodes and maps the queries itself).
    """
    if adapter is not None and adapter.elastic:
        layer, fine_layer = adapter.query_view.layer, adapter.fine_view.layer
        if layer >= fine_layer:
            return None
        default = QueryMapKind.NONE if adapter.wrapper_query_view else QueryMapKind.RIDGE
        exact = adapter.source_view.layer <= layer
        return QuerySetup(config.query_map or default, layer, exact)
    if config.query_layer is None:
        return None
    if adapter is not None:
        raise ValueError(
            f"CascadeConfig.query_layer {config.query_layer} needs an elastic ESE encoder; "
            f"{adapter.name} has a single vector per text"
        )
    if config.fine_view is not None and config.query_layer >= config.fine_view.layer:
        return None
    exact = config.coarse_layer is not None and config.coarse_layer <= config.query_layer
    return QuerySetup(config.query_map or QueryMapKind.RIDGE, config.query_layer, exact)


@dataclass(frozen=True, eq=False)
class LinearMap:
    """``x -> normalize(x @ matrix + bias)``: one fitted ridge map."""

    matrix: np.ndarray
    bias: np.ndarray

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """Map (n, in) vectors to L2-normalised (n, out) ones."""
        return l2_normalize(np.asarray(x, dtype=np.float32) @ self.matrix + self.bias)

    def packed(self) -> np.ndarray:
        """The matrix with the bias as an extra last row: (in + 1, out) float32, what is persisted."""
        return np.ascontiguousarray(np.vstack([self.matrix, self.bias[None, :]]), dtype=np.float32)

    @classmethod
    def unpack(cls, packed: np.ndarray) -> LinearMap:
        """Inverse of :meth:`packed`."""
        return cls(np.ascontiguousarray(packed[:-1]), np.ascontiguousarray(packed[-1]))

    @classmethod
    def ridge(cls, x: np.ndarray, y: np.ndarray, ridge: float) -> LinearMap:
        """The ridge map from ``x`` to ``y`` (rows paired; see :func:`.transforms.ridge_weights`)."""
        weights, mean_x, mean_y = ridge_weights(x, y, ridge)
        return cls(weights.astype(np.float32), (mean_y - mean_x @ weights).astype(np.float32))


@dataclass(frozen=True, eq=False)
class QueryMap:
    """The fitted bridge from a shallow query vector to the documents' coarse source and fine spaces.

    ``source`` is ``None`` when the coarse source is exact or the kind is ``none``; ``fine`` is
    ``None`` for ``none`` (the query's own ``(k, fine_dim)`` view is used).
    """

    kind: QueryMapKind
    layer: int
    exact_source: bool
    fine_dim: int
    """Width of the fine vectors (kind ``none`` keeps that many leading coordinates)."""
    source: LinearMap | None = None
    fine: LinearMap | None = None

    def views(self, source_view: View, fine_view: View, hidden: int, mode: SearchMode) -> list[View]:
        """The views one query pass encodes (all at layers ``<= k``) to feed ``mode``.

        ``source_view``: the coarse source view (Lc, hidden); ``fine_view``: the query's fine
        view (k, fine_dim).
        """
        wide = View(self.layer, hidden)
        views = [source_view if self.exact_source else wide]
        if mode is not SearchMode.COARSE:
            views.append(wide if self.kind is QueryMapKind.RIDGE else fine_view)
        return list(dict.fromkeys(views))

    def apply(
        self,
        vectors: Mapping[View, np.ndarray],
        source_view: View,
        fine_view: View,
        hidden: int,
        *,
        fine: bool,
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """(coarse source, fine or ``None``) query vectors from the views :meth:`views` asked for."""
        wide = vectors.get(View(self.layer, hidden))
        return self._map(wide, vectors.get(source_view), vectors.get(fine_view), fine=fine)

    def _map(
        self, wide: np.ndarray | None, exact: np.ndarray | None, narrow: np.ndarray | None, *, fine: bool
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """(coarse source, fine or ``None``) from the layer-k full-width vectors ``wide``, the
        exact coarse source ``exact`` and the layer-k fine view ``narrow`` (each when needed).
        """
        if self.exact_source:
            source = l2_normalize(exact)
        else:
            source = self.source(wide) if self.source is not None else l2_normalize(wide)
        if not fine:
            return source, None
        if self.fine is not None:
            return source, self.fine(wide)
        return source, l2_normalize(narrow if narrow is not None else wide[:, : self.fine_dim])

    def map_vectors(
        self, shallow: np.ndarray, exact_source: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """(coarse source, fine) query vectors from precomputed ones, for ``search_embeddings``.

        ``shallow``: (n, hidden) layer-``k`` full-width query vectors; ``exact_source``: their
        (n, hidden) layer-``Lc`` vectors, required when :attr:`exact_source`.
        """
        shallow = np.asarray(shallow, dtype=np.float32)
        if shallow.ndim != 2:
            raise ValueError(f"shallow query vectors must be 2-D, got shape {tuple(shallow.shape)}")
        if self.exact_source and exact_source is None:
            raise ValueError(
                f"this query map takes the coarse source as it is (coarse layer <= {self.layer}): "
                "pass exact_source="
            )
        source, fine = self._map(shallow, exact_source, None, fine=True)
        assert fine is not None
        return source, fine

    @property
    def input_dim(self) -> int | None:
        """Width of the shallow vectors the fitted maps take (``None`` without fitted maps)."""
        fitted = self.fine or self.source
        return None if fitted is None else int(fitted.matrix.shape[0])

    def describe(self) -> dict[str, Any]:
        """The JSON-able description persisted beside the arrays."""
        return {
            "kind": self.kind.value,
            "layer": self.layer,
            "exact_source": self.exact_source,
            "fine_dim": self.fine_dim,
            "input_dim": self.input_dim,
            "arrays": sorted(name for name, _ in self.arrays()),
        }

    def arrays(self) -> list[tuple[str, np.ndarray]]:
        """``(name, packed array)`` of each fitted map (``source``, ``fine``)."""
        return [(name, m.packed()) for name, m in (("source", self.source), ("fine", self.fine)) if m]

    @staticmethod
    def checked_description(meta: Any, kind: str) -> dict[str, Any]:
        """``meta`` (a parsed :meth:`describe`) checked, and that it is of ``kind``; ``ValueError`` else."""
        if not isinstance(meta, dict):
            raise ValueError("not a JSON object")
        if meta["kind"] != kind:
            raise ValueError(f"query map {meta['kind']!r} disagrees with the manifest ({kind!r})")
        if not set(meta["arrays"]) <= {"source", "fine"}:
            raise ValueError(f"unknown arrays {meta['arrays']}")
        if meta["arrays"] and not (isinstance(meta["input_dim"], int) and meta["input_dim"] > 0):
            raise ValueError(f"input_dim must be a positive int, got {meta['input_dim']!r}")
        QueryMap.from_description(meta, {})  # the other fields' types
        return meta

    @staticmethod
    def array_shapes(meta: Mapping[str, Any], source_dim: int, fine_dim: int) -> dict[str, tuple[int, int]]:
        """The packed shape of each array a checked description lists."""
        out = {"source": source_dim, "fine": fine_dim}
        return {name: (int(meta["input_dim"]) + 1, out[name]) for name in meta["arrays"]}

    @classmethod
    def from_description(cls, meta: Mapping[str, Any], arrays: Mapping[str, np.ndarray]) -> QueryMap:
        """Inverse of :meth:`describe` + :meth:`arrays` (the caller checked the arrays' shapes)."""
        maps = {name: LinearMap.unpack(packed) for name, packed in arrays.items()}
        return cls(
            QueryMapKind(meta["kind"]),
            int(meta["layer"]),
            bool(meta["exact_source"]),
            int(meta["fine_dim"]),
            maps.get("source"),
            maps.get("fine"),
        )


def fit_query_map(
    setup: QuerySetup,
    shallow: np.ndarray | None,
    source: np.ndarray,
    fine: np.ndarray,
    *,
    ridge: float,
) -> QueryMap:
    """Fit the query map of ``setup`` on documents: ``shallow`` (n, hidden) layer-``k`` vectors
    (``ridge`` only), their coarse ``source`` and ``fine`` vectors (rows paired).
    """
    fine_dim = int(fine.shape[1])
    if not setup.needs_fit:
        return QueryMap(setup.kind, setup.layer, setup.exact_source, fine_dim)
    if shallow is None:
        raise ValueError(
            f"a ridge query map for layer {setup.layer} needs the documents' layer-{setup.layer} "
            "vectors (query_source=...) to be fitted"
        )
    shallow = np.asarray(shallow)
    if shallow.ndim != 2 or shallow.shape[0] != fine.shape[0]:
        raise ValueError(
            f"query_source must have shape ({fine.shape[0]}, hidden), got {tuple(shallow.shape)}"
        )
    if shallow.shape[0] < 2:
        raise ValueError(f"fitting a ridge query map needs at least 2 documents, got {shallow.shape[0]}")
    to_source = None if setup.exact_source else LinearMap.ridge(shallow, source, ridge)
    to_fine = LinearMap.ridge(shallow, fine, ridge)
    return QueryMap(setup.kind, setup.layer, setup.exact_source, fine_dim, to_source, to_fine)
