"""Ray, imported lazily: the import with an error naming the extra, a cluster for the length of
a build (started locally when no address is given), and the original error of a failed task.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from typing import Any

__all__ = ["RAY_HINT", "cluster", "import_ray", "original_error"]

logger = logging.getLogger(__name__)

RAY_HINT = "the Ray path needs Ray Data: pip install 'esrag[ray]'"


def import_ray() -> Any:
    """The ``ray`` module (with ``ray.data``); ``ImportError`` naming the extra when missing."""
    try:
        import ray
        import ray.data
    except ImportError as exc:
        raise ImportError(f"{RAY_HINT} ({exc})") from None
    return ray


@contextlib.contextmanager
def cluster(address: str | None, *, show_progress_bar: bool | None = None) -> Iterator[Any]:
    """Connect to the Ray cluster at ``address`` for the block, or start a local one sized to
    this machine (and shut it down after). An already initialised Ray (a caller's own
    ``ray.init``) is used as it is and left running.
    """
    ray = import_ray()
    started = False
    if not ray.is_initialized():
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # no usage reports from a build
        kwargs: dict[str, Any] = {
            "include_dashboard": False,
            "log_to_driver": False,
            "logging_level": logging.WARNING,
        }
        if address in (None, "", "local"):
            ray.init(num_cpus=os.cpu_count() or 1, **kwargs)
        else:
            ray.init(address=address, **kwargs)
        started = True
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = bool(show_progress_bar)
    try:
        yield ray
    finally:
        if started:
            ray.shutdown()


def original_error(exc: BaseException) -> BaseException:
    """The user-level exception inside a Ray task failure (Ray wraps it once or twice), or ``exc``."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if not type(current).__module__.startswith("ray"):
            return current
        current = getattr(current, "cause", None) or current.__cause__
    return exc
