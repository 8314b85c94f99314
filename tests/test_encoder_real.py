"""The real default model against sentence-transformers (integration; needs ESRAG_DATA)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.data


def stsb_sentences(data_dir: Path, split: str, limit: int) -> list[str]:
    path = data_dir / "stsb" / "stsb.tsv"
    out: list[str] = []
    with path.open(encoding="utf-8", newline="") as handle:
        for row in csv.DictReader(handle, delimiter="\t"):
            if row["split"] == split:
                out.extend([row["sentence1"], row["sentence2"]])
            if len(out) >= limit:
                break
    return out[:limit]


def test_full_view_matches_sentence_transformers(data_dir, default_encoder):
    from sentence_transformers import SentenceTransformer

    from esrag.encoder import default_model_path

    sentences = stsb_sentences(data_dir, "dev", 50)
    assert len(sentences) == 50
    reference = SentenceTransformer(str(default_model_path()), device="cpu").encode(
        sentences, normalize_embeddings=True, convert_to_numpy=True
    )
    ours, shallow = default_encoder.encode(sentences, [(6, 384), (2, 64)])
    cosine = (ours * reference).sum(axis=1)
    assert cosine.min() >= 0.9999, f"min cosine {cosine.min():.6f}"
    assert shallow.shape == (50, 64)
    np.testing.assert_allclose(np.linalg.norm(shallow, axis=1), 1.0, atol=1e-5)
