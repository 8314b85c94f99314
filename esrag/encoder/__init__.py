"""The ESE encoder: every (layer, dim) view of a transformer from one forward pass."""

from esrag.encoder.config import EncoderConfig
from esrag.encoder.encoder import DEFAULT_MODEL_NAME, EspressoEncoder, default_model_path
from esrag.encoder.views import Pooling, View, parse_view, validate_views

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
