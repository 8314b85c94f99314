"""Progress bars: tqdm on a terminal, silent when not a TTY or when asked."""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import Any, TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")

__all__ = ["progress", "progress_enabled"]


def progress_enabled(show: bool | None) -> bool:
    """``show`` if given, else whether stderr is an interactive terminal."""
    if show is not None:
        return bool(show)
    return bool(getattr(sys.stderr, "isatty", lambda: False)())


def progress(
    iterable: Iterable[T] | None = None,
    *,
    total: int | None = None,
    desc: str | None = None,
    show: bool | None = None,
    unit: str = "it",
) -> Any:
    """A tqdm bar (or a disabled one) over ``iterable``; also usable as a manual bar."""
    return tqdm(iterable, total=total, desc=desc, disable=not progress_enabled(show), unit=unit)
