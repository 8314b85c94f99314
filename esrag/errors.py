"""The exceptions esrag raises on purpose, under one base class.

Catch :class:`EsragError` to handle every deliberate esrag error at once. Each specific error
also derives from the built-in type it has always been (``ValueError`` for bad data and
formats), so existing ``except ValueError`` code keeps working.
"""

from __future__ import annotations

__all__ = [
    "CoarseOnlyError",
    "EsragError",
    "InconsistentIndexError",
    "IndexFormatError",
    "ModelMismatchError",
]


class EsragError(Exception):
    """Base class of the errors esrag raises deliberately."""


class IndexFormatError(EsragError, ValueError):
    """An index folder is missing, corrupted, truncated or of an unsupported format."""


class ModelMismatchError(EsragError, ValueError):
    """The query encoder is not the model (or the settings) the index was built with."""


class InconsistentIndexError(EsragError, RuntimeError):
    """An index's parts disagree (a bug, not bad input): it is not saved, so the folder on
    disk keeps its previous, good version.
    """


class CoarseOnlyError(EsragError, RuntimeError):
    """The index is coarse-only (a shallow-first build whose fine vectors are being filled in):
    it refuses writes, and fine-mode searches, until ``CascadeIndex.fill_fine`` completes.
    """
