"""The index folder format, in one place: file names, the manifest, and reading and
writing a whole :class:`~esrag.index.state.IndexState`.

Layout of ``<folder>/``::

    manifest.json       format version, model identity, views, transform, counts, checksums
    coarse.faiss        faiss.write_index of the coarse stage (IndexIDMap2, or an IVF index)
    fine.npy            (count, fine_dim) float32/float16 fine vectors, row order
    ids.npy             (count,) int64 coarse ids of the rows
    tombstones.npy      int64 ids still inside the coarse index but deleted
    docs.jsonl          one {"id", "text", "metadata"} per row
    transform.json (+ transform_matrix.npy, transform_bias.npy unless the transform is prefix)
    query_map.json      only for shallow queries (+ query_map_fine.npy, query_map_source.npy of a
                        ridge map: (input_dim + 1, out) float32, the bias as the last row)

Saves go through :func:`esrag._io.atomic_folder` (temp folder, fsync, rename): a crash at
any point leaves the previous index in place. Loads check the format version, that every
listed file exists with the recorded size and SHA-256, that every file the format requires
is listed (an edited manifest cannot skip a checksum), and raise :class:`IndexFormatError`
naming the file otherwise. No other module spells these file names.
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

import numpy as np

from esrag._io import atomic_folder, recover_folder, sha256_file
from esrag.errors import IndexFormatError
from esrag.index.coarse import CoarseIndex
from esrag.index.config import CascadeConfig, QueryMapKind
from esrag.index.docstore import DocStore
from esrag.index.fine import FineStore
from esrag.index.query import QueryMap
from esrag.index.rows import RowMap
from esrag.index.state import IndexState
from esrag.index.transforms import FittedTransform
from esrag.validation import is_int

__all__ = [
    "FORMAT_VERSION",
    "MANIFEST_FILE",
    "REQUIRED_FILES",
    "TRANSFORM_ARRAY_FILES",
    "FileEntry",
    "Manifest",
    "is_index_folder",
    "load_state",
    "read_manifest",
    "save_state",
]

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
MANIFEST_FILE = "manifest.json"
COARSE_FILE = "coarse.faiss"
FINE_FILE = "fine.npy"
IDS_FILE = "ids.npy"
TOMBSTONES_FILE = "tombstones.npy"
DOCS_FILE = "docs.jsonl"
TRANSFORM_FILE = "transform.json"
MATRIX_FILE = "transform_matrix.npy"
BIAS_FILE = "transform_bias.npy"
QUERY_MAP_FILE = "query_map.json"
QUERY_ARRAY_FILES = {"source": "query_map_source.npy", "fine": "query_map_fine.npy"}
REQUIRED_FILES = (COARSE_FILE, DOCS_FILE, FINE_FILE, IDS_FILE, TOMBSTONES_FILE, TRANSFORM_FILE)
"""Files every index folder holds (and its manifest must list with their checksums)."""
TRANSFORM_ARRAY_FILES = (BIAS_FILE, MATRIX_FILE)
"""Also required when the transform is not ``prefix``."""
EMBEDDER_KINDS = ("elastic", "embeddings", "none")
_OPTIONAL_FIELDS = ("esrag_version", "created_at", "query_view", "query_map")
"""Manifest fields an index written before them lacks (``query_*``: full-depth queries)."""
_COUNT_FIELDS = ("source_dim", "fine_dim", "coarse_dim", "count", "next_id", "tombstones")


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
    query_view: tuple[int, int] | None = None
    """The queries' view (layer, dim) the index was built for (``None``: not recorded)."""
    query_map: str | None = None
    """``"none"``/``"ridge"`` for a shallow-query index (``query_map.json``), else ``None``."""

    def to_json(self) -> dict[str, Any]:
        """The manifest as a JSON object."""
        out = dataclasses.asdict(self)
        for name in ("coarse_source_view", "fine_view", "query_view"):
            if out[name] is not None:
                out[name] = list(out[name])
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any], *, path: Path) -> Manifest:
        """Parse and check a manifest; errors name ``path``."""
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
        missing = sorted(n for n in names if n not in data and n not in _OPTIONAL_FIELDS)
        if missing:
            raise IndexFormatError(f"{path}: manifest lacks field(s) {missing}")
        problem = _field_problem(data)
        if problem:
            raise IndexFormatError(f"{path}: malformed manifest ({problem})")
        values = {k: v for k, v in data.items() if k in names}
        values["files"] = {name: FileEntry(e["sha256"], e["bytes"]) for name, e in data["files"].items()}
        for name in ("coarse_source_view", "fine_view", "query_view"):
            if name not in values:
                continue
            if values[name] is not None:
                values[name] = (values[name][0], values[name][1])
        return cls(**values)


def _is_count(value: object) -> bool:
    return is_int(value) and value >= 0  # type: ignore[operator]


def _files_problem(files: object) -> str | None:
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
    if data["embedder_kind"] not in EMBEDDER_KINDS:
        return f"field 'embedder_kind' must be one of {list(EMBEDDER_KINDS)}, got {data['embedder_kind']!r}"
    if data.get("query_map") not in (None, *(kind.value for kind in QueryMapKind)):
        return f"field 'query_map' must be 'none', 'ridge' or null, got {data['query_map']!r}"
    for name in ("coarse_source_view", "fine_view", "query_view"):
        view = data.get(name)
        if view is not None and not (isinstance(view, list) and len(view) == 2 and all(map(_is_count, view))):
            return f"field {name!r} must be [layer, dim] or null, got {view!r}"
    if not isinstance(data["config"], dict):
        return f"field 'config' must be an object, got {data['config']!r}"
    return _files_problem(data["files"])


# ---------------------------------------------------------------------- folders
def is_index_folder(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a folder holding an index manifest (not whether it is intact)."""
    path = Path(path)
    return path.is_dir() and (path / MANIFEST_FILE).is_file()


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
    if manifest.query_map is not None:
        required.add(QUERY_MAP_FILE)
    unlisted = sorted(required - set(manifest.files))
    if unlisted:
        raise IndexFormatError(
            f"{path}: required file(s) {unlisted} are not listed in 'files' "
            "(the manifest is incomplete or was edited)"
        )
    for name, entry in manifest.files.items():
        _check_file(folder / name, entry, verify)
    return manifest


def _check_file(file: Path, entry: FileEntry, verify: bool) -> None:
    if not file.is_file():
        raise IndexFormatError(f"{file}: file listed in the manifest is missing")
    size = file.stat().st_size
    if size != entry.bytes:
        raise IndexFormatError(f"{file}: expected {entry.bytes} bytes, found {size} (truncated or corrupted)")
    if verify and sha256_file(file) != entry.sha256:
        raise IndexFormatError(f"{file}: checksum mismatch (corrupted)")


# ---------------------------------------------------------------------- save
def save_state(state: IndexState, folder: str | os.PathLike[str], identity: dict[str, Any]) -> Manifest:
    """Atomically write ``state`` (compacted to its live rows) into ``folder``.

    ``identity``: the model fields of the manifest (``model_name``, ``model_fingerprint``,
    ``embedder_kind``, ``coarse_source_view``, ``fine_view``). The caller keeps the state
    from changing while this runs (the index's read lock).
    """
    folder = Path(folder)
    rows = state.rows.live()
    manifest = Manifest(
        format_version=FORMAT_VERSION,
        **identity,
        source_dim=state.source_dim,
        fine_dim=state.fine_dim,
        coarse_dim=int(state.transform.dim),
        transform=state.transform.kind.value,
        index_type=state.config.index_type,
        config=state.config.to_dict(),
        count=int(rows.size),
        next_id=int(state.rows.next_coarse_id),
        tombstones=len(state.coarse.tombstones),
        query_map=state.query_map.kind.value if state.query_map is not None else None,
    )
    with atomic_folder(folder) as tmp:
        _write_parts(state, rows, tmp)
        files = {
            path.name: FileEntry(sha256_file(path), path.stat().st_size)
            for path in sorted(tmp.iterdir())
            if path.is_file() and path.name != MANIFEST_FILE
        }
        manifest = dataclasses.replace(manifest, files=files)
        text = json.dumps(manifest.to_json(), indent=2, sort_keys=True, ensure_ascii=False) + "\n"
        (tmp / MANIFEST_FILE).write_text(text, encoding="utf-8")
    logger.info("saved index with %d documents to %s", manifest.count, folder)
    return manifest


def _write_parts(state: IndexState, rows: np.ndarray, tmp: Path) -> None:
    state.coarse.write(tmp / COARSE_FILE)
    state.fine.write(tmp / FINE_FILE, rows)
    state.rows.write_coarse_ids(tmp / IDS_FILE, rows)
    dead = np.array(sorted(state.coarse.tombstones), dtype=np.int64)
    np.save(tmp / TOMBSTONES_FILE, dead, allow_pickle=False)
    state.docs.write(tmp / DOCS_FILE, rows, state.rows.doc_ids(rows.tolist()))
    (tmp / TRANSFORM_FILE).write_text(json.dumps(state.transform.describe(), indent=2) + "\n")
    arrays = state.transform.arrays()
    if arrays is not None:
        np.save(tmp / MATRIX_FILE, arrays[0], allow_pickle=False)
        np.save(tmp / BIAS_FILE, arrays[1], allow_pickle=False)
    if state.query_map is not None:
        (tmp / QUERY_MAP_FILE).write_text(json.dumps(state.query_map.describe(), indent=2) + "\n")
        for name, packed in state.query_map.arrays():
            np.save(tmp / QUERY_ARRAY_FILES[name], packed, allow_pickle=False)


# ---------------------------------------------------------------------- load
def _load_array(path: Path, shape: tuple[int, ...], what: str, dtype: type = np.float32) -> np.ndarray:
    try:
        array = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise IndexFormatError(f"{path}: unreadable {what} ({exc})") from None
    if array.shape != shape or array.dtype != dtype:
        expected = np.dtype(dtype).name
        raise IndexFormatError(
            f"{path}: expected {expected} {what} of shape {shape}, got {array.dtype} {array.shape}"
        )
    return array


def _load_transform(folder: Path, manifest: Manifest) -> FittedTransform:
    meta_path = folder / TRANSFORM_FILE
    try:
        meta = json.loads(meta_path.read_text())
        transform = FittedTransform.from_description(meta, None)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise IndexFormatError(f"{meta_path}: unreadable transform description ({exc})") from None
    if (transform.source_dim, transform.dim) != (manifest.source_dim, manifest.coarse_dim):
        raise IndexFormatError(f"{meta_path}: dims disagree with the manifest")
    if transform.kind.value != manifest.transform:
        raise IndexFormatError(
            f"{meta_path}: transform {transform.kind.value!r} disagrees with the manifest "
            f"({manifest.transform!r})"
        )
    if transform.kind.value == "prefix":
        return transform
    matrix = _load_array(folder / MATRIX_FILE, (transform.source_dim, transform.dim), "array")
    bias = _load_array(folder / BIAS_FILE, (transform.dim,), "array")
    return FittedTransform.from_description(meta, (matrix, bias))


def _load_query_map(folder: Path, manifest: Manifest) -> QueryMap | None:
    """The shallow-query map (``None`` for full-depth queries); its arrays must be listed files."""
    if manifest.query_map is None:
        return None
    path = folder / QUERY_MAP_FILE
    try:
        meta = QueryMap.checked_description(json.loads(path.read_text()), manifest.query_map)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise IndexFormatError(f"{path}: unreadable query map description ({exc})") from None
    arrays = {}
    for name, shape in QueryMap.array_shapes(meta, manifest.source_dim, manifest.fine_dim).items():
        if QUERY_ARRAY_FILES[name] not in manifest.files:
            raise IndexFormatError(f"{path}: {QUERY_ARRAY_FILES[name]} is not listed in the manifest")
        arrays[name] = _load_array(folder / QUERY_ARRAY_FILES[name], shape, "query map")
    return QueryMap.from_description(meta, arrays)


def _config(folder: Path, manifest: Manifest) -> CascadeConfig:
    try:
        return CascadeConfig.from_dict(manifest.config)
    except (TypeError, ValueError) as exc:
        raise IndexFormatError(f"{folder / MANIFEST_FILE}: bad config ({exc})") from None


def load_state(
    folder: str | os.PathLike[str],
    *,
    verify: bool = True,
    mmap: bool = True,
    check: Callable[[Manifest, CascadeConfig], None] | None = None,
) -> tuple[IndexState, Manifest]:
    """Read an index folder into a state; every problem is an :class:`IndexFormatError`
    naming the file.

    ``check(manifest, config)`` runs once the manifest and its configuration are read and
    before any other file is (the caller's model check, see :mod:`esrag.index.identity`).
    """
    folder = Path(folder)
    manifest = read_manifest(folder, verify=verify)
    config = _config(folder, manifest)
    if check is not None:
        check(manifest, config)
    transform = _load_transform(folder, manifest)
    try:
        fine = FineStore.read(
            folder / FINE_FILE,
            dim=manifest.fine_dim,
            dtype=config.fine_dtype,
            count=manifest.count,
            mmap=mmap,
        )
        docs, doc_ids = DocStore.read(folder / DOCS_FILE, count=manifest.count)
    except ValueError as exc:
        raise IndexFormatError(str(exc)) from None
    coarse_ids = _load_ids(folder / IDS_FILE, manifest.count)
    tombstones = _load_ids(folder / TOMBSTONES_FILE, manifest.tombstones)
    try:
        rows = RowMap.restore(doc_ids, coarse_ids, manifest.next_id)
    except ValueError as exc:
        raise IndexFormatError(f"{folder / IDS_FILE}: {exc}") from None
    coarse = _load_coarse(folder, manifest, config, tombstones)
    query_map = _load_query_map(folder, manifest)
    logger.info("loaded index with %d documents from %s", manifest.count, folder)
    return IndexState(config, transform, coarse, fine, docs, rows, query_map), manifest


def _load_ids(path: Path, count: int) -> np.ndarray:
    try:
        arr = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise IndexFormatError(f"{path}: unreadable ids ({exc})") from None
    if arr.dtype != np.int64 or arr.ndim != 1 or arr.size != count:
        raise IndexFormatError(f"{path}: expected int64 ids of shape ({count},), got {arr.dtype} {arr.shape}")
    return arr


def _load_coarse(
    folder: Path, manifest: Manifest, config: CascadeConfig, tombstones: np.ndarray
) -> CoarseIndex:
    try:
        coarse = CoarseIndex.read(
            folder / COARSE_FILE,
            dim=manifest.coarse_dim,
            index_type=config.index_type,
            nprobe=config.nprobe,
            ef_search=config.ef_search,
            use_gpu=config.use_gpu,
            tombstones=tombstones,
        )
    except ValueError as exc:
        raise IndexFormatError(str(exc)) from None
    live = coarse.ntotal - len(coarse.tombstones)
    if live != manifest.count:
        raise IndexFormatError(
            f"{folder / COARSE_FILE}: holds {live} live vectors, the manifest says {manifest.count}"
        )
    return coarse
