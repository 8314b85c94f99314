"""The manifest of an index folder: what it holds, with every field's type and bounds checked.

:class:`Manifest` is a frozen value, written last by a save and read first by a load
(:mod:`esrag.index.format` owns the file and the folder layout). :meth:`Manifest.from_json`
refuses, with an :class:`~esrag.errors.IndexFormatError` naming the file, any field of the
wrong type or out of bounds (dims >= 1, coarse dim <= source dim, ``next_id`` within the
coarse ids' range and above every stored id) before the caller allocates anything.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

from esrag.errors import IndexFormatError
from esrag.index.config import QueryMapKind
from esrag.index.rows import MAX_COARSE_ID
from esrag.validation import is_int

__all__ = ["COMPLETE_FORMAT", "EMBEDDER_KINDS", "FORMAT_VERSION", "FileEntry", "Manifest"]

FORMAT_VERSION = 3
"""3: a coarse-only version (shallow-first build) may hold its fine vectors in parts
(``fine_parts``); 2: versioned folders (``versions/<id>/``) and a model identity block; 1: flat
folder. A save writes the oldest version that describes its files: a complete index is format 2.
"""
COMPLETE_FORMAT = 2
"""The format a complete index (every fine vector in ``fine.npy``) is written as."""
EMBEDDER_KINDS = ("elastic", "embeddings", "none")
_COUNT_FIELDS = ("source_dim", "fine_dim", "coarse_dim", "count", "next_id", "tombstones")
_DIM_FIELDS = ("source_dim", "fine_dim", "coarse_dim")
_OPTIONAL_FIELDS = ("esrag_version", "created_at", "version", "identity")
"""Fields a manifest may lack: the first two are informative, the last two are new in format 2."""
_QUERY_FIELDS = ("query_view", "query_map", "fine_parts")
"""Fields only a shallow-query or a coarse-only index needs (an index written before them lacks them)."""
_VIEW_FIELDS = ("coarse_source_view", "fine_view", "query_view")


def _esrag_version() -> str:
    try:
        return importlib_metadata.version("esrag")
    except importlib_metadata.PackageNotFoundError:
        return "0+unknown"


@dataclass(frozen=True)
class FileEntry:
    """Size and SHA-256 of one file of an index folder."""

    sha256: str
    bytes: int


@dataclass(frozen=True)
class Manifest:
    """What an index folder holds; written last, read first."""

    format_version: int
    model_name: str | None
    model_fingerprint: str | None
    embedder_kind: str
    """``"elastic"`` (ESE encoder), ``"embeddings"`` (LangChain) or ``"none"`` (vectors only)."""
    coarse_source_view: tuple[int, int] | None
    fine_view: tuple[int, int] | None
    source_dim: int
    fine_dim: int
    coarse_dim: int
    transform: str
    index_type: str
    config: dict[str, Any]
    count: int
    next_id: int
    tombstones: int
    files: dict[str, FileEntry] = field(default_factory=dict)
    esrag_version: str = field(default_factory=_esrag_version)
    created_at: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))
    version: str | None = None
    """Id of the version folder holding the files (``None`` in format 1: the folder itself)."""
    identity: dict[str, Any] | None = None
    """Everything about the model that changes a vector (see :mod:`esrag.index.identity`);
    ``None`` in format 1, which records only the weights' fingerprint and the views.
    """
    query_view: tuple[int, int] | None = None
    """The queries' view (layer, dim) the index was built for (``None``: not recorded)."""
    query_map: str | None = None
    """``"none"``/``"ridge"`` for a shallow-query index (``query_map.json``), else ``None``."""
    fine_parts: tuple[int, ...] | None = None
    """Coarse-only (format 3): the row counts of the fine part files, in row order (the first
    ``sum(fine_parts)`` rows have fine vectors); ``None``: every row's is in ``fine.npy``."""

    @property
    def fine_count(self) -> int:
        """Rows whose fine vectors the version holds."""
        return self.count if self.fine_parts is None else sum(self.fine_parts)

    def dump(self) -> bytes:
        """The manifest file's bytes (sorted keys, UTF-8)."""
        text = json.dumps(self.to_json(), indent=2, sort_keys=True, ensure_ascii=False) + "\n"
        return text.encode("utf-8")

    def to_json(self) -> dict[str, Any]:
        """The manifest as a JSON object."""
        out = dataclasses.asdict(self)
        for name in (*_VIEW_FIELDS, "fine_parts"):
            if out[name] is not None:
                out[name] = list(out[name])
        if out["fine_parts"] is None:
            del out["fine_parts"]  # a complete index's manifest is format 2's
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any], *, path: Path) -> Manifest:
        """Parse and check a manifest; errors name ``path``."""
        if not isinstance(data, dict):
            raise IndexFormatError(f"{path}: the manifest is not a JSON object")
        version = data.get("format_version")
        if not is_int(version) or version < 1:
            raise IndexFormatError(
                f"{path}: missing or invalid 'format_version' (an int >= 1), got {version!r}"
            )
        if version > FORMAT_VERSION:
            raise IndexFormatError(
                f"{path}: index format {version} is newer than this esrag supports "
                f"({FORMAT_VERSION}); upgrade esrag to load it"
            )
        names = {f.name for f in dataclasses.fields(cls)}
        optional = (*(_OPTIONAL_FIELDS if version == 1 else _OPTIONAL_FIELDS[:2]), *_QUERY_FIELDS)
        missing = sorted(n for n in names if n not in data and n not in optional)
        if missing:
            raise IndexFormatError(f"{path}: manifest lacks field(s) {missing}")
        problem = _field_problem(data)
        if problem:
            raise IndexFormatError(f"{path}: malformed manifest ({problem})")
        values = {k: v for k, v in data.items() if k in names}
        values["files"] = {name: FileEntry(e["sha256"], e["bytes"]) for name, e in data["files"].items()}
        for name in _VIEW_FIELDS:
            if values.get(name) is not None:
                values[name] = (values[name][0], values[name][1])
        if values.get("fine_parts") is not None:
            values["fine_parts"] = tuple(values["fine_parts"])
        return cls(**values)


def _is_count(value: object) -> bool:
    return is_int(value) and value >= 0  # type: ignore[operator]


def _files_problem(files: object) -> str | None:
    if not isinstance(files, dict):
        return f"field 'files' must be an object of file name -> {{sha256, bytes}}, got {files!r}"
    for name, entry in files.items():
        if not _is_plain_name(name):
            return f"files: {name!r} is not a plain file name"
        if not (
            isinstance(entry, dict) and isinstance(entry.get("sha256"), str) and _is_count(entry.get("bytes"))
        ):
            return f"files[{name!r}] must be {{'sha256': str, 'bytes': int}}, got {entry!r}"
    return None


def _bounds_problem(data: dict[str, Any]) -> str | None:
    """What is wrong with the manifest's numbers, or ``None`` (types already checked)."""
    for name in _DIM_FIELDS:
        if data[name] < 1:
            return f"field {name!r} must be >= 1, got {data[name]!r}"
    if data["coarse_dim"] > data["source_dim"]:
        return f"coarse_dim {data['coarse_dim']} exceeds source_dim {data['source_dim']}"
    if data["next_id"] > MAX_COARSE_ID:
        return f"field 'next_id' must be at most {MAX_COARSE_ID}, got {data['next_id']}"
    parts = data.get("fine_parts")
    if parts is not None:
        if data["format_version"] < 3 or not (isinstance(parts, list) and all(map(_is_count, parts))):
            return f"field 'fine_parts' must be a list of row counts (format 3), got {parts!r}"
        if sum(parts) > data["count"] or data["tombstones"]:
            return f"fine_parts {parts} exceed count {data['count']} or come with tombstones"
    if data["count"] + data["tombstones"] > data["next_id"]:
        return (
            f"count {data['count']} + tombstones {data['tombstones']} exceed next_id {data['next_id']} "
            "(every stored vector has a distinct id below next_id)"
        )
    return None


def _version_problem(data: dict[str, Any]) -> str | None:
    """What is wrong with the format-2 fields, or ``None``."""
    version, identity = data.get("version"), data.get("identity")
    if data["format_version"] >= 2 and not (isinstance(version, str) and _is_plain_name(version)):
        return f"field 'version' must be the name of a version folder, got {version!r}"
    if identity is not None and not isinstance(identity, dict):
        return f"field 'identity' must be an object or null, got {identity!r}"
    return None


def _views_problem(data: dict[str, Any]) -> str | None:
    """What is wrong with the view fields and the query map kind, or ``None``."""
    if data.get("query_map") not in (None, *(kind.value for kind in QueryMapKind)):
        return f"field 'query_map' must be 'none', 'ridge' or null, got {data['query_map']!r}"
    for name in _VIEW_FIELDS:
        view = data.get(name)
        if view is not None and not (isinstance(view, list) and len(view) == 2 and all(map(_is_count, view))):
            return f"field {name!r} must be [layer, dim] or null, got {view!r}"
    return None


def _is_plain_name(name: str) -> bool:
    return bool(name) and name not in (".", "..") and "/" not in name and "\\" not in name


def _field_problem(data: dict[str, Any]) -> str | None:
    """What is wrong with the manifest's field types and bounds, or ``None``."""
    for name in _COUNT_FIELDS:
        if not _is_count(data[name]):
            return f"field {name!r} must be a non-negative int, got {data[name]!r}"
    problem = _bounds_problem(data) or _version_problem(data)
    if problem:
        return problem
    for name in ("transform", "index_type"):
        if not isinstance(data[name], str):
            return f"field {name!r} must be a str, got {data[name]!r}"
    for name in ("model_name", "model_fingerprint"):
        if data[name] is not None and not isinstance(data[name], str):
            return f"field {name!r} must be a str or null, got {data[name]!r}"
    if data["embedder_kind"] not in EMBEDDER_KINDS:
        return f"field 'embedder_kind' must be one of {list(EMBEDDER_KINDS)}, got {data['embedder_kind']!r}"
    problem = _views_problem(data)
    if problem:
        return problem
    if not isinstance(data["config"], dict):
        return f"field 'config' must be an object, got {data['config']!r}"
    return _files_problem(data["files"])
