"""Checks of user input shared by every esrag module: ints, strings, batch sizes, vectors.

Each check returns the value in its canonical form or raises ``TypeError``/``ValueError``
with a message naming the argument, the position and what was expected. Callers pass the
name as the user knows it (``"CascadeConfig.shortlist"``, ``"batch_size"``, ``"ids"``), so
one implementation serves every message.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

__all__ = [
    "check_batch_size",
    "check_dim",
    "check_int",
    "check_number",
    "check_strings",
    "check_texts",
    "check_vectors",
    "default_shortlist",
    "is_int",
    "is_number",
]

_VECTOR_CHUNK = 65_536


def is_int(value: object, *, numpy_ok: bool = False) -> bool:
    """True for an ``int`` that is not a ``bool`` (and numpy integers when ``numpy_ok``)."""
    kinds: tuple[type, ...] = (int, np.integer) if numpy_ok else (int,)
    return isinstance(value, kinds) and not isinstance(value, bool)


def is_number(value: object) -> bool:
    """True for an ``int`` or ``float`` that is not a ``bool``."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def check_number(value: object, name: str, *, ok: Callable[[float], bool], expected: str) -> float:
    """``value`` as a number for which ``ok(value)`` holds, else ``ValueError``
    ``"{name} must be {expected}, got {value!r}"``.
    """
    if not is_number(value) or not ok(value):  # type: ignore[arg-type]
        raise ValueError(f"{name} must be {expected}, got {value!r}")
    return value  # type: ignore[return-value]


def check_int(
    value: object,
    name: str,
    *,
    minimum: int | None = None,
    expected: str | None = None,
    error: type[Exception] = ValueError,
    numpy_ok: bool = False,
) -> int:
    """``value`` as an ``int`` that is at least ``minimum``.

    The message is ``"{name} must be {expected}, got {value!r}"``; ``expected`` defaults to
    ``"an int >= {minimum}"`` (or ``"an int"``). ``error`` is the exception type for every
    failure (``ValueError`` by default).
    """
    if expected is None:
        expected = "an int" if minimum is None else f"an int >= {minimum}"
    if not is_int(value, numpy_ok=numpy_ok) or (minimum is not None and value < minimum):  # type: ignore[operator]
        raise error(f"{name} must be {expected}, got {value!r}")
    return int(value)  # type: ignore[arg-type]


def check_batch_size(batch_size: object) -> int:
    """A batch size: an int >= 1 (``TypeError`` for a non-int, ``ValueError`` below 1)."""
    if not is_int(batch_size, numpy_ok=True):
        raise TypeError(f"batch_size must be an int >= 1, got {batch_size!r}")
    return check_int(batch_size, "batch_size", minimum=1, numpy_ok=True)


def check_strings(values: Any, name: str) -> list[str]:
    """``values`` as a list of str; errors name ``name`` and the offending position."""
    if isinstance(values, str):
        raise TypeError(f"{name} must be a list of strings, not a single string")
    if not isinstance(values, Iterable):
        raise TypeError(f"{name} must be a list of strings, got {type(values).__name__}")
    values = list(values)
    for position, value in enumerate(values):
        if not isinstance(value, str):
            raise TypeError(f"{name}[{position}] must be a str, got {type(value).__name__}")
    return values


def check_texts(texts: Any) -> list[str]:
    """``texts`` as a list of str (see :func:`check_strings`)."""
    return check_strings(texts, "texts")


def check_dim(name: str, arr: np.ndarray, dim: int | None) -> None:
    """``arr`` (2-D) has ``dim`` columns, when ``dim`` is known."""
    if dim is not None and arr.shape[1] != dim:
        raise ValueError(f"{name} has {arr.shape[1]} dims, the index expects {dim} (shape (n, {dim}))")


def check_vectors(name: str, vectors: Any, dim: int | None, n: int | None = None) -> np.ndarray:
    """A finite 2-D float32 array with ``dim`` columns (when known) and ``n`` rows (when given).

    A non-empty 1-D array is read as one row.
    """
    arr = np.asarray(vectors, dtype=np.float32)
    if arr.ndim == 1 and arr.size:
        arr = arr[None, :]
    if arr.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array (n, dim), got shape {arr.shape}")
    check_dim(name, arr, dim)
    if n is not None and arr.shape[0] != n:
        raise ValueError(f"{name} has {arr.shape[0]} rows, expected {n}")
    for start in range(0, arr.shape[0], _VECTOR_CHUNK):  # chunked: no full-size temporary
        if not np.isfinite(arr[start : start + _VECTOR_CHUNK]).all():
            raise ValueError(f"{name} contains NaN or infinite values")
    return arr


def default_shortlist(shortlist: Any, k: object, default: int) -> Any:
    """An explicit ``shortlist`` as given (validated later); else ``default`` grown to ``k``.

    A ``k`` that is not an int leaves ``default`` as it is (``k`` is validated elsewhere).
    """
    if shortlist is not None:
        return shortlist
    return max(default, k) if is_int(k) else default  # type: ignore[call-overload]
