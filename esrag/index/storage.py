"""Index folder format: a JSON manifest plus FAISS / ``.npy`` / JSONL files, no pickle.

Layout of ``<folder>/``::

    manifest.json       format version, model identity, views, transform, counts, checksums
    coarse.faiss        faiss.write_index of the IndexIDMap2 coarse stage
    fine.npy            (count, fine_dim) float32/float16 fine vectors, row order
    ids.npy             (count,) int64 coarse ids of the rows
    tombstones.npy      int64 ids still inside the coarse index but deleted
    docs.jsonl          one {"id", "text", "metadata"} per row
    transform.json (+ transform_matrix.npy, transform_bias.npy)

Saves go through :func:`esrag._io.atomic_folder` (temp folder, fsync, rename): a crash at
any point leaves the previous index in place. Loads check the format version, that every
listed file exists with the recorded size and SHA-256, that every file the format requires
is listed (an edited manifest cannot skip a checksum), and raise :class:`IndexFormatError`
naming the file otherwise.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

from esrag._io import atomic_folder, recover_folder, sha256_file

__all__ = [
    "FORMAT_VERSION",
    "MANIFEST_FILE",
    "REQUIRED_FILES",
    "TRANSFORM_ARRAY_FILES",
    "IndexFormatError",
    "Manifest",
    "ModelMismatchError",
    "read_manifest",
    "write_index_folder",
]

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
MANIFEST_FILE = "manifest.json"
REQUIRED_FILES = ("coarse.faiss", "docs.jsonl", "fine.npy", "ids.npy", "tombstones.npy", "transform.json")
"""Files every index folder holds (and its manifest must list with their checksums)."""
TRANSFORM_ARRAY_FILES = ("transform_bias.npy", "transform_matrix.npy")
"""Also required when the transform is not ``prefix``."""
_EMBEDDER_KINDS = ("elastic", "embeddings", "none")
_COUNT_FIELDS = ("source_dim", "fine_dim", "coarse_dim", "count", "next_id", "tombstones")


class IndexFormatError(ValueError):
    """An index folder is missing, corrupted, truncated or of an unsupported format."""


class ModelMismatchError(ValueError):
    """The query encoder is not the model the index was built with."""


def _esrag_version() -> str:
    try:
        return importlib_metadata.version("esrag")
    except importlib_metadata.PackageNotFoundError:
        return "0+unknown"


@dataclass(frozen=True)
class FileEntry:
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

    def to_json(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        for name in ("coarse_source_view", "fine_view"):
            if out[name] is not None:
                out[name] = list(out[name])
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any], *, path: Path) -> Manifest:
        if not isinstance(data, dict):
            raise IndexFormatError(f"{path}: the manifest is not a JSON object")
        version = data.get("format_version")
        if not isinstance(version, int):
            raise IndexFormatError(f"{path}: missing or invalid 'format_version'")
        if version > FORMAT_VERSION:
            raise IndexFormatError(
                f"{path}: index format {version} is newer than this esrag supports "
                f"({FORMAT_VERSION}); upgrade esrag to load it"
            )
        names = {f.name for f in dataclasses.fields(cls)}
        missing = sorted(n for n in names if n not in data and n not in ("esrag_version", "created_at"))
        if missing:
            raise IndexFormatError(f"{path}: manifest lacks field(s) {missing}")
        problem = _field_problem(data)
        if problem:
            raise IndexFormatError(f"{path}: malformed manifest ({problem})")
        values = {k: v for k, v in data.items() if k in names}
        values["files"] = {name: FileEntry(e["sha256"], e["bytes"]) for name, e in data["files"].items()}
        for name in ("coarse_source_view", "fine_view"):
            if values[name] is not None:
                values[name] = (values[name][0], values[name][1])
        return cls(**values)


def _is_count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _field_problem(data: dict[str, Any]) -> str | None:
    """What is wrong with the manifest's field types, or ``None``."""
    for name in _COUNT_FIELDS:
        if not _is_count(data[name]):
            return f"field {name!r} must be a non-negative int, got {data[name]!r}"
    for name in ("transform", "index_type"):
        if not isinstance(data[name], str):
            return f"field {name!r} must be a str, got {data[name]!r}"
    for name in ("model_name", "model_fingerprint"):
        if data[name] is not None and not isinstance(data[name], str):
            return f"field {name!r} must be a str or null, got {data[name]!r}"
    if data["embedder_kind"] not in _EMBEDDER_KINDS:
        return f"field 'embedder_kind' must be one of {list(_EMBEDDER_KINDS)}, got {data['embedder_kind']!r}"
    for name in ("coarse_source_view", "fine_view"):
        view = data[name]
        if view is not None and not (isinstance(view, list) and len(view) == 2 and all(map(_is_count, view))):
            return f"field {name!r} must be [layer, dim] or null, got {view!r}"
    if not isinstance(data["config"], dict):
        return f"field 'config' must be an object, got {data['config']!r}"
    files = data["files"]
    if not isinstance(files, dict):
        return f"field 'files' must be an object of file name -> {{sha256, bytes}}, got {files!r}"
    for name, entry in files.items():
        if not name or name in (".", "..") or "/" in name or "\\" in name:
            return f"files: {name!r} is not a plain file name"
        if not (
            isinstance(entry, dict) and isinstance(entry.get("sha256"), str) and _is_count(entry.get("bytes"))
        ):
            return f"files[{name!r}] must be {{'sha256': str, 'bytes': int}}, got {entry!r}"
    return None


def write_index_folder(
    folder: str | os.PathLike[str],
    write_files: Callable[[Path], None],
    manifest: Manifest,
) -> Manifest:
    """Atomically write an index folder: ``write_files(tmp)`` then checksums and the manifest."""
    folder = Path(folder)
    with atomic_folder(folder) as tmp:
        write_files(tmp)
        files = {
            path.name: FileEntry(sha256_file(path), path.stat().st_size)
            for path in sorted(tmp.iterdir())
            if path.is_file() and path.name != MANIFEST_FILE
        }
        final = dataclasses.replace(manifest, files=files)
        text = json.dumps(final.to_json(), indent=2, sort_keys=True, ensure_ascii=False) + "\n"
        (tmp / MANIFEST_FILE).write_text(text, encoding="utf-8")
    logger.info("saved index with %d documents to %s", final.count, folder)
    return final


def read_manifest(folder: str | os.PathLike[str], *, verify: bool = True) -> Manifest:
    """Read and check an index folder's manifest and (with ``verify``) every file's checksum."""
    folder = Path(folder)
    recover_folder(folder)
    path = folder / MANIFEST_FILE
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no index folder here")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise IndexFormatError(f"{path}: missing manifest; {folder} is not an esrag index") from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise IndexFormatError(f"{path}: unreadable manifest ({exc})") from None
    manifest = Manifest.from_json(data, path=path)
    required = set(REQUIRED_FILES)
    if manifest.transform != "prefix":
        required |= set(TRANSFORM_ARRAY_FILES)
    unlisted = sorted(required - set(manifest.files))
    if unlisted:
        raise IndexFormatError(
            f"{path}: required file(s) {unlisted} are not listed in 'files' "
            "(the manifest is incomplete or was edited)"
        )
    for name, entry in manifest.files.items():
        file = folder / name
        if not file.is_file():
            raise IndexFormatError(f"{file}: file listed in the manifest is missing")
        size = file.stat().st_size
        if size != entry.bytes:
            raise IndexFormatError(
                f"{file}: expected {entry.bytes} bytes, found {size} (truncated or corrupted)"
            )
        if verify and sha256_file(file) != entry.sha256:
            raise IndexFormatError(f"{file}: checksum mismatch (corrupted)")
    return manifest
