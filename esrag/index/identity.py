"""The model identity an index records, and the check that a query encoder matches it.

An index is only meaningful with the encoder (and the views) its documents were encoded
with. :func:`identity_fields` gives the manifest fields describing the embedder;
:func:`check_identity` refuses an embedder that differs, naming the field and both values.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from esrag.errors import ModelMismatchError
from esrag.index.config import CascadeConfig
from esrag.index.embedder import EmbedderAdapter
from esrag.index.format import MANIFEST_FILE, Manifest

__all__ = ["ModelCheck", "check_identity", "identity_fields"]

logger = logging.getLogger(__name__)


def _view(view: Any) -> tuple[int, int] | None:
    return None if view is None else (int(view.layer), int(view.dim))


def identity_fields(adapter: EmbedderAdapter | None) -> dict[str, Any]:
    """The manifest's model fields for ``adapter`` (an index without one records none)."""
    if adapter is None:
        return {
            "model_name": None,
            "model_fingerprint": None,
            "embedder_kind": "none",
            "coarse_source_view": None,
            "fine_view": None,
            "query_view": None,
        }
    return {
        "model_name": adapter.name,
        "model_fingerprint": adapter.fingerprint,
        "embedder_kind": adapter.kind,
        "coarse_source_view": _view(adapter.source_view),
        "fine_view": _view(adapter.fine_view),
        "query_view": _view(adapter.query_view),
    }


def check_identity(folder: Path, manifest: Manifest, adapter: EmbedderAdapter) -> None:
    """Raise :class:`ModelMismatchError` unless ``adapter`` is the model ``manifest`` records."""
    where = folder / MANIFEST_FILE
    if manifest.embedder_kind not in ("none", adapter.kind):
        raise ModelMismatchError(
            f"{where}: the index was built with a {manifest.embedder_kind} embedder "
            f"({manifest.model_name!r}), got a {adapter.kind} one ({adapter.name!r})"
        )
    if manifest.model_fingerprint is None:
        logger.warning("%s records no model fingerprint; cannot verify the query encoder", where)
    elif adapter.fingerprint != manifest.model_fingerprint:
        raise ModelMismatchError(
            f"{where}: the index was built with model {manifest.model_name!r} "
            f"(fingerprint {manifest.model_fingerprint[:16]}…), but the query encoder "
            f"{adapter.name!r} has fingerprint {adapter.fingerprint[:16]}…; "
            "load it with the index's model or rebuild the index"
        )
    for label, recorded, actual in (
        ("coarse source view", manifest.coarse_source_view, _view(adapter.source_view)),
        ("fine view", manifest.fine_view, _view(adapter.fine_view)),
    ):
        if recorded is not None and actual is not None and tuple(recorded) != actual:
            raise ModelMismatchError(f"{where}: {label} is {recorded}, the encoder gives {actual}")
    _check_query_view(where, manifest, _view(adapter.query_view))


def _check_query_view(where: Path, manifest: Manifest, actual: tuple[int, int] | None) -> None:
    """A shallow-query index answers only queries of the view it was built for."""
    recorded = manifest.query_view
    if manifest.query_map is None or recorded is None or actual is None or tuple(recorded) == actual:
        return
    raise ModelMismatchError(
        f"{where}: the index answers queries encoded with view {recorded[0]}:{recorded[1]}, the encoder "
        f"gives {actual[0]}:{actual[1]}; load it with that query view (or a bare encoder), or rebuild it"
    )


class ModelCheck:
    """The model check of a load: called with the manifest and configuration once they are
    read (before the other files), it builds the embedder's adapter and refuses a mismatch.
    ``adapter`` is then the adapter to search with (``None`` without an embedder).
    """

    def __init__(self, folder: Path, embedder: Any | None) -> None:
        self.folder = folder
        self.embedder = embedder
        self.adapter: EmbedderAdapter | None = None

    def __call__(self, manifest: Manifest, config: CascadeConfig) -> None:
        """Check the embedder against ``manifest`` (nothing to check without one)."""
        if self.embedder is None:
            return
        try:
            adapter = EmbedderAdapter(self.embedder, config)
        except ModelMismatchError as exc:
            raise ModelMismatchError(f"{self.folder / MANIFEST_FILE}: {exc}") from None
        check_identity(self.folder, manifest, adapter)
        adapter.learn_dims(manifest.source_dim, manifest.fine_dim)
        self.adapter = adapter
