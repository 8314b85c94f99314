"""Pooling of token states into sentence embeddings."""

from __future__ import annotations

import torch

from esrag.encoder.views import Pooling

__all__ = ["pool"]


def pool(hidden: torch.Tensor, attention_mask: torch.Tensor, pooling: Pooling) -> torch.Tensor:
    """Pool ``hidden`` (B, T, H) into (B, H): masked mean, or the first ([CLS]) token."""
    if pooling is Pooling.CLS:
        return hidden[:, 0]
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    summed = (hidden * mask).sum(dim=1)
    counts = mask.sum(dim=1).clamp(min=1e-9)
    return summed / counts
