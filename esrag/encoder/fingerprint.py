"""Fingerprints of what an encoder's vectors depend on: its weights and its tokenizer.

Both are SHA-256 hex digests of content, not of locations: the same weights or the same
tokenizer loaded from another folder give the same fingerprint.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import torch

__all__ = ["tokenizer_fingerprint", "weights_fingerprint"]

_CALL_STATE = ("truncation", "padding")
"""Parts of a fast tokenizer's serialized state that each call sets (not part of its identity)."""


def weights_fingerprint(model: torch.nn.Module) -> str:
    """SHA-256 of the weights: every tensor's name, shape and float32 values, in name order."""
    digest = hashlib.sha256()
    for key, tensor in sorted(model.state_dict().items()):
        data = tensor.detach().to("cpu", torch.float32).contiguous()
        digest.update(f"{key}:{tuple(data.shape)};".encode())
        digest.update(data.numpy().tobytes())
    return digest.hexdigest()


def tokenizer_fingerprint(tokenizer: Any) -> str:
    """SHA-256 of how a tokenizer turns text into ids.

    A fast tokenizer is identified by its serialized state (vocabulary, normaliser,
    pre-tokenizer, post-processor, added tokens; without the truncation and padding that
    each call sets); a slow one by its vocabulary. Either way the class, the special tokens
    and the padding and truncation sides are included.
    """
    payload: dict[str, Any] = {
        "class": type(tokenizer).__name__,
        "special_tokens": getattr(tokenizer, "special_tokens_map", None),
        "padding_side": getattr(tokenizer, "padding_side", None),
        "truncation_side": getattr(tokenizer, "truncation_side", None),
    }
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        state = json.loads(backend.to_str())
        for key in _CALL_STATE:
            state.pop(key, None)
        payload["backend"] = state
    else:
        payload["vocab"] = sorted(tokenizer.get_vocab().items())
    text = json.dumps(payload, sort_keys=True, ensure_ascii=False, default=repr)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()
