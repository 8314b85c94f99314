"""The ESE encoder: every (layer, dim) view of a transformer from one forward pass.

Views and configuration import without torch; the encoder itself (torch + transformers)
is imported on first use, so ``esrag.index`` and the CLI start fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from esrag.encoder.config import EncoderConfig
from esrag.encoder.views import Pooling, View, parse_view, validate_views

if TYPE_CHECKING:
    from esrag.encoder.encoder import DEFAULT_MODEL_NAME, EspressoEncoder, default_model_path

__all__ = [
    "DEFAULT_MODEL_NAME",
    "EncoderConfig",
    "EspressoEncoder",
    "Pooling",
    "View",
    "default_model_path",
    "parse_view",
    "validate_views",
]

_LAZY = frozenset({"DEFAULT_MODEL_NAME", "EspressoEncoder", "default_model_path"})


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from esrag.encoder import encoder

        return getattr(encoder, name)
    raise AttributeError(f"module 'esrag.encoder' has no attribute {name!r}")
