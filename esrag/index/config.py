"""Configuration of a :class:`~esrag.index.cascade.CascadeIndex`: frozen, JSON round-trippable."""

from __future__ import annotations

import dataclasses
import enum
import math
from dataclasses import dataclass
from typing import Any

from esrag.encoder.views import View, parse_view
from esrag.validation import check_int, check_number, is_number

__all__ = ["CascadeConfig", "FineDType", "QueryMapKind", "SearchMode", "Transform", "check_exit_margin"]


class Transform(str, enum.Enum):
    """How the coarse source vector (layer Lc, full width) becomes the coarse vector (dc dims)."""

    PREFIX = "prefix"
    """The first dc dimensions (what ESE training makes informative)."""
    PCA = "pca"
    """A PCA rotation fitted on the corpus's coarse source vectors; keep dc components."""
    ADAPTER = "adapter"
    """A closed-form ridge map from the coarse source to the fine vector, then PCA to dc."""


class QueryMapKind(str, enum.Enum):
    """How a shallow query (its pass stops at ``query_layer``) reaches the documents' deep spaces."""

    NONE = "none"
    """The shallow vector as it is (for a model trained so that its shallow query layer fits)."""
    RIDGE = "ridge"
    """A closed-form ridge map fitted on the corpus at index time, from the documents' layer-k
    vectors to their coarse source and fine vectors (label-free)."""


class SearchMode(str, enum.Enum):
    """Which stages a search runs."""

    CASCADE = "cascade"
    """Coarse shortlist, exact fine rerank."""
    COARSE = "coarse"
    """Coarse stage only (its scores)."""
    FINE = "fine"
    """Exact flat search over every fine vector: the reference ranking."""


class FineDType(str, enum.Enum):
    """Storage type of the fine vectors."""

    FLOAT32 = "float32"
    FLOAT16 = "float16"


@dataclass(frozen=True)
class CascadeConfig:
    """Settings of a cascade index.

    For an embedder without views (any LangChain ``Embeddings``) the coarse source and the
    fine vector are both its L2-normalised embedding; ``coarse_layer`` and ``fine_view``
    are then ignored.
    """

    coarse_layer: int | None = None
    """1-based layer Lc of the coarse source view (Lc, hidden); ``None`` = the last layer."""
    coarse_dim: int = 64
    """Coarse dimension dc after the transform (clipped to the source dimension)."""
    transform: Transform = Transform.PCA
    fine_view: View | None = None
    """Fine view (Ld, dd); ``None`` = the encoder's default view."""
    index_type: str = "Flat"
    """FAISS factory string of the coarse index: ``Flat``, ``HNSW32``, ``IVF1024,Flat``, ..."""
    shortlist: int = 100
    """Default number of coarse candidates reranked by the fine stage."""
    fine_dtype: FineDType = FineDType.FLOAT32
    nprobe: int = 16
    """IVF lists probed per query."""
    ef_search: int = 128
    """HNSW search breadth (raised to at least the shortlist)."""
    train_size: int = 50_000
    """Documents used to fit the transform and train the coarse index (the first ones)."""
    adapter_ridge: float = 0.1
    """Ridge strength of the adapter, relative to the mean eigenvalue of the source covariance."""
    use_gpu: bool | None = None
    """``None``: use faiss-gpu when installed and a GPU is present; ``True``: require it."""
    exact_filter_threshold: int = 20_000
    """Filtered searches matching at most this many documents are scored exactly."""
    query_layer: int | None = None
    """1-based layer the queries' encoder pass stops at; ``None`` = the fine layer (full depth),
    or the layer of the embeddings' own ``query_view``. Shallower than the fine layer, both
    stages score the shallow query vector (through :attr:`query_map`) against deep documents."""
    query_map: QueryMapKind | None = None
    """How a shallow query is mapped; ``None`` = ``ridge``, or ``none`` when the layer comes from
    the embeddings' own ``query_view`` (so the index ranks like their ``embed_query``)."""
    exit_margin: float | None = None
    """Early exit: a query whose coarse shortlist is decisive (normalised top-1 gap, see
    :mod:`esrag.index.early_exit`, at least this margin) is answered from the shortlist and its
    encoder pass stops at the coarse layer. ``None`` (or ``inf``, stored as ``None``): never;
    ``0``: always."""
    progressive: bool = False
    """Start the coarse search on a worker thread as soon as the coarse layer is pooled, while
    the deeper layers run (same results; see :mod:`esrag.index.progressive`). Off by default:
    it pays only with a core to spare for the worker (measured on a shared 2-core machine: 0.95×
    the sequential p50 at 200k documents with a flat coarse stage, 1.01–1.09× at 1M)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "transform", _enum(Transform, self.transform, "transform"))
        object.__setattr__(self, "fine_dtype", _enum(FineDType, self.fine_dtype, "fine_dtype"))
        if self.fine_view is not None:
            object.__setattr__(self, "fine_view", parse_view(self.fine_view, what="fine_view"))
        if self.query_map is not None:
            object.__setattr__(self, "query_map", _enum(QueryMapKind, self.query_map, "query_map"))
        for name in ("coarse_dim", "shortlist", "nprobe", "ef_search", "train_size"):
            check_int(getattr(self, name), f"CascadeConfig.{name}", minimum=1, expected="a positive int")
        for name in ("coarse_layer", "query_layer"):
            if getattr(self, name) is not None:
                check_int(
                    getattr(self, name),
                    f"CascadeConfig.{name}",
                    minimum=1,
                    expected="a 1-based layer or None",
                )
        if not isinstance(self.index_type, str) or not self.index_type.strip():
            raise ValueError(
                f"CascadeConfig.index_type must be a faiss factory string, got {self.index_type!r}"
            )
        check_number(
            self.adapter_ridge, "CascadeConfig.adapter_ridge", ok=lambda v: v > 0, expected="a number > 0"
        )
        check_int(self.exact_filter_threshold, "CascadeConfig.exact_filter_threshold", minimum=0)
        if self.exit_margin is not None:
            margin = check_exit_margin(self.exit_margin, "CascadeConfig.exit_margin")
            object.__setattr__(self, "exit_margin", None if math.isinf(margin) else float(margin))
        if not isinstance(self.progressive, bool):
            raise ValueError(f"CascadeConfig.progressive must be True or False, got {self.progressive!r}")
        if not (self.use_gpu is None or isinstance(self.use_gpu, bool)):
            raise ValueError(f"CascadeConfig.use_gpu must be None, True or False, got {self.use_gpu!r}")

    def replace(self, **changes: Any) -> CascadeConfig:
        """A copy with ``changes`` applied (validated)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form."""
        out: dict[str, Any] = {}
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if isinstance(value, enum.Enum):
                value = value.value
            elif isinstance(value, View):
                value = value.to_json()
            out[field.name] = value
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CascadeConfig:
        """Inverse of :meth:`to_dict`; unknown keys are an error."""
        if not isinstance(data, dict):
            raise TypeError(f"CascadeConfig.from_dict expects a dict, got {type(data).__name__}")
        known = {field.name for field in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown CascadeConfig field(s) {unknown}; known: {sorted(known)}")
        return cls(**data)


def check_exit_margin(value: object, name: str = "exit_margin") -> float:
    """``value`` as an early-exit margin: a number >= 0 (``inf``: never exit); ``ValueError`` else."""
    if isinstance(value, str) or not is_number(value):
        raise ValueError(f"{name} must be a number >= 0 (inf: never exit), got {value!r}")
    margin = float(value)  # type: ignore[arg-type]
    if math.isnan(margin) or margin < 0:
        raise ValueError(f"{name} must be a number >= 0 (inf: never exit), got {value!r}")
    return margin


def _enum(kind: type[enum.Enum], value: object, name: str) -> Any:
    try:
        return kind(value)
    except ValueError:
        choices = ", ".join(repr(member.value) for member in kind)
        raise ValueError(f"CascadeConfig.{name} must be one of {choices}, got {value!r}") from None
