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
listed file exists with the recorded size and SHA-256, and raise :class:`IndexFormatError`
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
    "IndexFormatError",
    "Manifest",
    "ModelMismatchError",
    "read_manifest",
    "write_index_folder",
]

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
MANIFEST_FILE = "manifest.json"


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
        try:
            values = {k: v for k, v in data.items() if k in names}
            values["files"] = {
                str(name): FileEntry(str(e["sha256"]), int(e["bytes"])) for name, e in data["files"].items()
            }
            for name in ("coarse_source_view", "fine_view"):
                if values[name] is not None:
                    values[name] = (int(values[name][0]), int(values[name][1]))
            return cls(**values)
        except (TypeError, KeyError, ValueError, IndexError) as exc:
            raise IndexFormatError(f"{path}: malformed manifest ({exc})") from None


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
