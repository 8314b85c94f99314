"""How the format-1 fixtures beside this file were written (esrag at commit 565c682, the last
version writing the flat index layout): ``python make_format1.py tests/data/format1``.

Kept for the record; running it with a newer esrag writes the current format instead.
"""

from __future__ import annotations

import sys

import numpy as np
from langchain_core.embeddings import DeterministicFakeEmbedding

from esrag.index import CascadeConfig, CascadeIndex

N, DIM = 40, 12


def vectors() -> tuple[np.ndarray, np.ndarray]:
    """(coarse source, fine) vectors of the ``vectors`` fixture."""
    fine = np.random.default_rng(11).standard_normal((N, DIM)).astype("float32")
    return fine[:, ::-1].copy(), fine


def main(out: str) -> None:
    source, fine = vectors()
    index = CascadeIndex.build_from_embeddings(
        source,
        fine,
        ids=[f"d{i}" for i in range(N)],
        texts=[f"text {i}" for i in range(N)],
        metadatas=[{"g": i % 3, "name": f"n{i}"} for i in range(N)],
        config=CascadeConfig(coarse_dim=4, transform="pca"),
    )
    index.delete(["d3"])
    index.save(f"{out}/vectors")
    texts = [f"text number {i}" for i in range(20)]
    CascadeIndex.build(
        DeterministicFakeEmbedding(size=8),
        texts,
        ids=[f"t{i}" for i in range(20)],
        metadatas=[{"year": 2000 + i} for i in range(20)],
    ).save(f"{out}/embeddings")


if __name__ == "__main__":
    main(sys.argv[1])
