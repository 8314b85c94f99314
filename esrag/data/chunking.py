"""Split long texts into overlapping chunks on word boundaries."""

from __future__ import annotations

import re

from esrag.validation import check_int, is_int

__all__ = ["chunk_text"]

_WORD = re.compile(r"\S+")


def chunk_text(text: str, size: int = 1000, overlap: int = 200) -> list[str]:
    """Chunks of at most ``size`` characters (a longer single word is kept whole), where
    each chunk repeats about the last ``overlap`` characters of the previous one.

    Whitespace inside a chunk is kept as in the source; leading/trailing whitespace is
    stripped. An all-whitespace text gives no chunks.
    """
    check_int(size, "chunk size", minimum=1, expected="a positive int")
    if not is_int(overlap) or not 0 <= overlap < size:
        raise ValueError(f"chunk overlap must be an int in 0..{size - 1} (below the size), got {overlap!r}")
    words = [(m.start(), m.end()) for m in _WORD.finditer(text)]
    chunks: list[str] = []
    first = 0
    while first < len(words):
        last = first
        start = words[first][0]
        while last + 1 < len(words) and words[last + 1][1] - start <= size:
            last += 1
        chunks.append(text[start : words[last][1]])
        if last + 1 >= len(words):
            break
        # next chunk starts at the earliest word that still lies within the overlap window
        nxt = last + 1
        while nxt - 1 > first and words[last][1] - words[nxt - 1][0] <= overlap:
            nxt -= 1
        first = nxt
    return chunks
