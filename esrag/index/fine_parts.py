"""The fine vectors of a coarse-only index version (format 3) as part files.

A shallow-first build (:mod:`esrag.index.shallow`) saves its index before any document has a
fine vector, then fills them in chunk by chunk. Each committed chunk is one part file
``fine-<i>.npy`` (``(n_i, fine_dim)``, the rows that follow the previous parts), so a commit
writes only the new chunk; the manifest's ``fine_parts`` lists the row counts. Once every row
has its fine vector the index is saved as an ordinary (format 2) version with one ``fine.npy``.
:mod:`esrag.index.format` owns the rest of the folder layout.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from esrag.index.config import FineDType
from esrag.index.fine import FineStore, read_vectors

__all__ = ["part_name", "part_names", "read_parts"]


def part_name(position: int) -> str:
    """File name of the fine part at ``position`` (0-based)."""
    return f"fine-{position:05d}.npy"


def part_names(parts: Sequence[int]) -> list[str]:
    """File names of every part a manifest's ``fine_parts`` lists."""
    return [part_name(i) for i in range(len(parts))]


def read_parts(
    folder: Path, parts: Sequence[int], *, dim: int, dtype: FineDType | str, mmap: bool = True
) -> FineStore:
    """The fine store of a coarse-only version: its parts, in order, in memory.

    Raises ``ValueError`` naming the file when a part is unreadable or of the wrong shape.
    """
    want = np.dtype(FineDType(dtype).value)
    arrays = []
    for name, count in zip(part_names(parts), parts, strict=True):
        arrays.append(read_vectors(folder / name, dim=dim, dtype=dtype, count=count, mmap=mmap))
    base = np.concatenate(arrays) if arrays else np.empty((0, int(dim)), dtype=want)
    return FineStore(dim, dtype, base=np.ascontiguousarray(base, dtype=want))
