"""(layer, dim) views of an elastic encoder."""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass

from esrag.validation import is_int

__all__ = ["Pooling", "View", "check_view", "parse_view", "validate_views"]


class Pooling(str, enum.Enum):
    """How token states become a sentence embedding."""

    MEAN = "mean"
    CLS = "cls"


@dataclass(frozen=True, order=True)
class View:
    """One embedding view: the pooled output of transformer ``layer`` (1-based), first ``dim`` dims.

    Vectors of a view are L2-normalised after slicing, so cosine similarity is the inner
    product.
    """

    layer: int
    dim: int

    def __str__(self) -> str:
        return f"{self.layer}:{self.dim}"

    def to_json(self) -> list[int]:
        """``[layer, dim]``."""
        return [self.layer, self.dim]


def parse_view(value: object, *, what: str = "view") -> View:
    """Accept a :class:`View`, a ``(layer, dim)`` pair or a ``"layer:dim"`` string."""
    if isinstance(value, View):
        return value
    if isinstance(value, str):
        parts = value.split(":")
        if len(parts) != 2 or not all(p.strip().lstrip("-").isdigit() for p in parts):
            raise ValueError(f"{what} {value!r} is not of the form LAYER:DIM, e.g. '2:64'")
        return View(int(parts[0]), int(parts[1]))
    if isinstance(value, Sequence) and len(value) == 2:
        layer, dim = value
        for name, item in (("layer", layer), ("dim", dim)):
            if not is_int(item):
                raise TypeError(f"{what} {value!r}: {name} must be an int, got {type(item).__name__}")
        return View(int(layer), int(dim))
    raise TypeError(f"{what} must be a View, a (layer, dim) pair or a 'layer:dim' string, got {value!r}")


def validate_views(views: Sequence[object], num_layers: int, hidden_size: int) -> list[View]:
    """Parse and check views against a model's shape; errors name the position and value."""
    if isinstance(views, (str, View)) or not isinstance(views, Sequence):
        raise TypeError(f"views must be a list of (layer, dim) pairs, got {views!r}")
    if len(views) == 0:
        raise ValueError("views must not be empty")
    parsed: list[View] = []
    seen: dict[View, int] = {}
    for position, raw in enumerate(views):
        view = parse_view(raw, what=f"views[{position}]")
        if not 1 <= view.layer <= num_layers:
            raise ValueError(f"views[{position}] = {raw!r}: layer {view.layer} is outside 1..{num_layers}")
        if not 1 <= view.dim <= hidden_size:
            raise ValueError(f"views[{position}] = {raw!r}: dim {view.dim} is outside 1..{hidden_size}")
        if view in seen:
            raise ValueError(
                f"views[{position}] = {raw!r} duplicates views[{seen[view]}]; ask for each view once"
            )
        seen[view] = position
        parsed.append(view)
    return parsed


def check_view(value: object, what: str, num_layers: int, hidden_size: int) -> View:
    """One view, parsed and checked against a model's shape; errors start with ``what``.

    Form errors (``parse_view``) name ``what`` directly; range errors read
    ``"{what}: views[0] = ...: layer 9 is outside 1..6"``.
    """
    parse_view(value, what=what)  # form errors name ``what``
    try:
        return validate_views([value], num_layers, hidden_size)[0]
    except ValueError as exc:
        raise ValueError(f"{what}: {exc}") from None
