"""The model identity an index records, and the check that a query encoder matches it.

An index is only meaningful with the encoder (and the views) its documents were encoded
with. :func:`identity_fields` gives the manifest fields describing the embedder, among them
the ``identity`` block: everything that changes a vector, i.e. for an ESE encoder the
weights' and the tokenizer's fingerprints, the pooling, the token limit, the coarse source,
fine and query views and the normalisation (for a LangChain ``Embeddings``: the hash of its
class and settings, and the normalisation). :func:`check_identity` refuses an embedder that
differs in any of them with a :class:`ModelMismatchError` naming the field and both values.

Manifests of index format 1 have no identity block: they record the weights' fingerprint
and the two views, which are still checked; pooling, token limit and tokenizer cannot be,
and a warning says so.
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
            "identity": None,
            "query_view": None,
        }
    return {
        "model_name": adapter.name,
        "model_fingerprint": adapter.fingerprint,
        "embedder_kind": adapter.kind,
        "coarse_source_view": _view(adapter.source_view),
        "fine_view": _view(adapter.fine_view),
        "identity": adapter.identity,
        "query_view": _view(adapter.query_view),
    }


_LABELS = {
    "weights": "weights fingerprint",
    "tokenizer": "tokenizer fingerprint",
    "embeddings": "embeddings fingerprint",
    "max_length": "max_length (tokens)",
    "normalize": "normalisation",
}


def _shown(value: Any) -> str:
    return f"{value[:16]}…" if isinstance(value, str) and len(value) == 64 else repr(value)


def _check_block(where: Path, manifest: Manifest, actual: dict[str, Any]) -> None:
    """Every field of the identity block agrees (a format-1 manifest has none: warn)."""
    recorded = manifest.identity
    if manifest.embedder_kind == "none":
        return  # built from vectors alone: nothing recorded to compare
    if recorded is None:
        logger.warning(
            "%s (index format 1) records only the weights and the views: the pooling, "
            "max_length and tokenizer of the query encoder cannot be verified",
            where,
        )
        return
    for name in sorted(set(recorded) | set(actual)):
        if recorded.get(name) != actual.get(name):
            label = _LABELS.get(name, name.replace("_", " "))
            raise ModelMismatchError(
                f"{where}: {label} differs: the index was built with {_shown(recorded.get(name))}, "
                f"the query encoder has {_shown(actual.get(name))}; load the index with the "
                "encoder (and settings) it was built with, or rebuild it"
            )


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
    _check_block(where, manifest, adapter.identity)


def _check_query_view(where: Path, manifest: Manifest, actual: tuple[int, int] | None) -> None:
    """A shallow-query index answers only queries of the view it was built for."""
    recorded = manifest.query_view
    if manifest.query_map is None or recorded is None or actual is None or tuple(recorded) == actual:
        return
    raise ModelMismatchError(
        f"{where}: the index answers queries encoded with view {recorded[0]}:{recorded[1]}, the encoder "
        f"gives {actual[0]}:{actual[1]}; load it with that query view (or a bare encoder), or rebuild it"
    )


def _query_view_difference(manifest: Manifest, embedder: Any) -> str:
    """`` (query view differs: ...)`` when the embedder's own query view is not the recorded one."""
    recorded = manifest.query_view or (manifest.identity or {}).get("query_view")
    view = getattr(embedder, "query_view", None)
    actual = None if view is None else [int(view.layer), int(view.dim)]
    if recorded is None or actual is None or list(recorded) == actual:
        return ""
    return f" (query view differs: the index was built with {list(recorded)}, the query encoder has {actual})"


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
            detail = _query_view_difference(manifest, self.embedder)
            raise ModelMismatchError(f"{self.folder / MANIFEST_FILE}: {exc}{detail}") from None
        check_identity(self.folder, manifest, adapter)
        adapter.learn_dims(manifest.source_dim, manifest.fine_dim)
        self.adapter = adapter
