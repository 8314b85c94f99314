"""EspressoEncoder on a tiny random BERT: views, one pass, order, norms, validation, save/load."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import AutoModel, AutoTokenizer

from esrag.encoder import EspressoEncoder, View

TEXTS = [
    "the cat eats fish",
    "a dog",
    "retrieval with a fast index of sentence embedding vectors runs in the city",
    "",
    "green tree",
    "the new model reads the old paper about cancer and a virus and a gene",
    "x",
]


def reference_views(model_dir: Path, texts: list[str], layer: int, dim: int) -> np.ndarray:
    """The (layer, dim) view from a separately truncated model (first ``layer`` layers only)."""
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModel.from_pretrained(model_dir, num_hidden_layers=layer).eval()
    out = []
    with torch.no_grad():
        for text in texts:  # one at a time: no padding at all
            batch = tokenizer([text], return_tensors="pt", truncation=True, max_length=64)
            hidden = model(**batch).last_hidden_state[0]
            vector = hidden.mean(dim=0)[:dim]
            out.append((vector / vector.norm()).numpy())
    return np.stack(out)


def test_views_from_one_pass_equal_truncated_models(tiny_encoder, tiny_model_dir):
    views = [(1, 8), (2, 32), (3, 16), (3, 32)]
    got = tiny_encoder.encode(TEXTS, views, batch_size=3)
    assert [g.shape for g in got] == [(len(TEXTS), d) for _, d in views]
    for (layer, dim), array in zip(views, got, strict=True):
        assert array.dtype == np.float32
        expected = reference_views(tiny_model_dir, TEXTS, layer, dim)
        np.testing.assert_allclose(array, expected, atol=2e-5)


def test_default_view_is_last_layer_full_width(tiny_encoder):
    assert tiny_encoder.default_view == View(3, 32)
    single = tiny_encoder.encode(TEXTS)
    (full,) = tiny_encoder.encode(TEXTS, [(3, 32)])
    assert isinstance(single, np.ndarray)
    np.testing.assert_allclose(single, full, atol=1e-6)


def test_layers_above_the_deepest_view_are_not_run(tiny_encoder):
    calls: list[int] = []
    hooks = [
        layer.register_forward_hook(lambda *_a, i=i: calls.append(i))
        for i, layer in enumerate(tiny_encoder.model.encoder.layer, start=1)
    ]
    try:
        tiny_encoder.encode(TEXTS, [(2, 16), (1, 32)], batch_size=100)
    finally:
        for hook in hooks:
            hook.remove()
    assert sorted(set(calls)) == [1, 2]
    assert len(tiny_encoder.model.encoder.layer) == 3  # restored after the pass


def test_order_is_restored_after_length_batching(tiny_encoder):
    batched = tiny_encoder.encode(TEXTS, batch_size=2)
    one_by_one = np.concatenate([tiny_encoder.encode([t]) for t in TEXTS])
    np.testing.assert_allclose(batched, one_by_one, atol=2e-5)
    reversed_ = tiny_encoder.encode(TEXTS[::-1], batch_size=2)
    np.testing.assert_allclose(reversed_[::-1], batched, atol=2e-5)


def test_vectors_are_unit_norm_and_unnormalised_on_request(tiny_encoder):
    a, b = tiny_encoder.encode(TEXTS, [(1, 5), (3, 32)])
    np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(b, axis=1), 1.0, atol=1e-5)
    raw = tiny_encoder.encode(TEXTS, normalize=False)
    assert not np.allclose(np.linalg.norm(raw, axis=1), 1.0)


def test_empty_inputs(tiny_encoder):
    assert tiny_encoder.encode([]).shape == (0, 32)
    a, b = tiny_encoder.encode([], [(1, 4), (2, 8)])
    assert a.shape == (0, 4) and b.shape == (0, 8)
    vector = tiny_encoder.encode([""])  # an empty string is a valid input: pooled special tokens
    assert vector.shape == (1, 32) and np.isfinite(vector).all()


def test_truncation_is_logged(tiny_encoder, caplog):
    with caplog.at_level(logging.INFO, logger="esrag.encoder.encoder"):
        tiny_encoder.encode(["cat " * 200, "dog"])
    assert "1 of 2 inputs were longer than max_length=64" in caplog.text


@pytest.mark.parametrize(
    ("texts", "error", "message"),
    [
        ("the cat", TypeError, "got a single str"),
        (["ok", None], TypeError, r"texts\[1\] must be a str, got NoneType"),
        (["ok", "fine", 3], TypeError, r"texts\[2\] must be a str, got int"),
        (42, TypeError, "texts must be a list of str, got int"),
    ],
)
def test_bad_texts(tiny_encoder, texts, error, message):
    with pytest.raises(error, match=message):
        tiny_encoder.encode(texts)


@pytest.mark.parametrize(
    ("views", "error", "message"),
    [
        ([(0, 8)], ValueError, r"views\[0\] = \(0, 8\): layer 0 is outside 1..3"),
        ([(1, 8), (4, 8)], ValueError, r"views\[1\] = \(4, 8\): layer 4 is outside 1..3"),
        ([(2, 0)], ValueError, r"dim 0 is outside 1..32"),
        ([(2, 33)], ValueError, r"views\[0\] = \(2, 33\): dim 33 is outside 1..32"),
        ([(2, 8), (1, 4), (2, 8)], ValueError, r"views\[2\] = \(2, 8\) duplicates views\[0\]"),
        ([(2.0, 8)], TypeError, r"views\[0\].*layer must be an int, got float"),
        ([(True, 8)], TypeError, r"layer must be an int, got bool"),
        ([(1, 2, 3)], TypeError, r"views\[0\] must be a View"),
        (["2x8"], ValueError, r"not of the form LAYER:DIM"),
        ([], ValueError, "views must not be empty"),
        ((2, 8), TypeError, r"views\[0\] must be a View"),
    ],
)
def test_bad_views(tiny_encoder, views, error, message):
    with pytest.raises(error, match=message):
        tiny_encoder.encode(["cat"], views)


def test_view_strings_and_objects(tiny_encoder):
    a, b = tiny_encoder.encode(["cat"], ["2:8", View(1, 4)])
    assert a.shape == (1, 8) and b.shape == (1, 4)


def test_bad_constructor_arguments(tiny_model_dir, tmp_path):
    with pytest.raises(ValueError, match="max_length 1000 exceeds the model's 64 positions"):
        EspressoEncoder(tiny_model_dir, max_length=1000)
    with pytest.raises(ValueError, match=r"layer 9 is outside 1..3"):
        EspressoEncoder(tiny_model_dir, default_view=(9, 8))
    with pytest.raises(ValueError, match="'median' is not a valid Pooling"):
        EspressoEncoder(tiny_model_dir, pooling="median")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        EspressoEncoder(tmp_path / "missing" / "model")
    with pytest.raises(ValueError, match="batch_size must be a positive int"):
        EspressoEncoder(tiny_model_dir).encode(["a"], batch_size=0)


def test_save_round_trip(tiny_model_dir, tmp_path):
    encoder = EspressoEncoder(tiny_model_dir, pooling="cls", max_length=32, default_view=(2, 16))
    expected = encoder.encode(TEXTS, [(2, 16), (3, 32)])
    folder = encoder.save(tmp_path / "saved")
    loaded = EspressoEncoder(folder)
    assert loaded.pooling.value == "cls" and loaded.max_length == 32
    assert loaded.default_view == View(2, 16)
    assert loaded.fingerprint == encoder.fingerprint
    for a, b in zip(expected, loaded.encode(TEXTS, [(2, 16), (3, 32)]), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-6)
    AutoModel.from_pretrained(folder)  # plain transformers still loads it
    # saving again over the folder replaces it atomically
    encoder.save(folder)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["saved"]


def test_corrupt_esrag_json(tiny_model_dir, tmp_path):
    folder = EspressoEncoder(tiny_model_dir).save(tmp_path / "m")
    (folder / "esrag.json").write_text('{"pooling": "mean",\n "format_version": 99}')
    with pytest.raises(ValueError, match=r"esrag.json: format_version 99 is newer"):
        EspressoEncoder(folder)
    (folder / "esrag.json").write_text('{"pooling": "mean",\n oops}')
    with pytest.raises(ValueError, match=r"esrag.json: line 2: invalid JSON"):
        EspressoEncoder(folder)
    (folder / "esrag.json").write_text('{"pooling": "max"}')
    with pytest.raises(ValueError, match=r"field 'pooling' must be one of \['mean', 'cls'\]"):
        EspressoEncoder(folder)


def test_pooled_layers_is_differentiable(tiny_encoder):
    features = tiny_encoder.tokenize(["the cat", "a dog runs"])
    features.pop("num_truncated", None)
    pooled = tiny_encoder.pooled_layers(features, [1, 3])
    assert set(pooled) == {1, 3} and pooled[1].requires_grad
    pooled[1].sum().backward()
    first = tiny_encoder.model.encoder.layer[0].attention.self.query.weight
    assert first.grad is not None and first.grad.abs().sum() > 0
    tiny_encoder.model.zero_grad(set_to_none=True)
    with pytest.raises(ValueError, match=r"layers must lie in 1..3"):
        tiny_encoder.pooled_layers(features, [4])


def test_fingerprint_tracks_weights(tiny_model_dir):
    encoder = EspressoEncoder(tiny_model_dir)
    before = encoder.fingerprint
    with torch.no_grad():
        encoder.model.encoder.layer[0].output.dense.bias.add_(1.0)
    assert encoder.fingerprint == before  # cached until refreshed
    assert encoder.refresh_fingerprint() != before


def test_tiny_tokenizer_knows_its_words(tiny_encoder):
    assert tiny_encoder.tokenizer.tokenize("the cat") == ["the", "cat"]
    vectors = tiny_encoder.encode(["the cat", "a dog runs"])
    assert float(vectors[0] @ vectors[1]) < 0.999
