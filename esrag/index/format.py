"""The index folder format, in one place: file names, the manifest, and reading and
writing a whole :class:`~esrag.index.state.IndexState`.

Layout of ``<folder>/`` (format 2)::

    manifest.json       the current version: format version, version id, model identity,
                        views, transform, counts, and the size and SHA-256 of every file
    versions/<id>/      the files of version ``<id>`` (below); complete before it is named

Files of a version::

    coarse.faiss        faiss.write_index of the coarse stage (IndexIDMap2, or an IVF index)
    fine.npy            (count, fine_dim) float32/float16 fine vectors, row order
    ids.npy             (count,) int64 coarse ids of the rows
    tombstones.npy      int64 ids still inside the coarse index but deleted
    docs.jsonl          one {"id", "text", "metadata"} per row
    transform.json (+ transform_matrix.npy, transform_bias.npy unless the transform is prefix)
    query_map.json      only for shallow queries (+ query_map_fine.npy, query_map_source.npy of a
                        ridge map: (input_dim + 1, out) float32, the bias as the last row)

A coarse-only version (format 3, a shallow-first build filling in its fine vectors) holds
``fine-<i>.npy`` parts instead of ``fine.npy`` (:mod:`esrag.index.fine_parts`).

A save writes a whole new version folder and then publishes it by atomically replacing
``manifest.json`` (:mod:`esrag._versions`): a crash at any point leaves the previous index
in place, and a reader in another process, which reads the manifest once and opens every
file from the version it names (locked while it loads), sees the old or the new index,
never a mix. Versions no reader holds are deleted by the next save. The folder itself is
never replaced (a symlinked index path stays a symlink). Format 1 (the same files directly
in ``<folder>/``, no version id or identity block) still loads; saving over it converts it.

Loads check the format version, every manifest field and its bounds (dims, ``next_id``
within the coarse ids' range and above every stored id) before any other file is read
(nothing is ever allocated from a manifest count: each count is checked against the shape
of the file it describes when that file is read), that every
listed file exists with the recorded size and SHA-256, that every file the format requires
is listed (an edited manifest cannot skip a checksum), and raise :class:`IndexFormatError`
naming the file otherwise. Saves refuse a state whose parts disagree (see
:func:`~esrag.index.state.consistency_problem`), and a write that fails (a full disk) is an
``OSError`` naming the folder, with the previous version left in place. No other module
spells these file names.
"""

from __future__ import annotations

import dataclasses
import errno
import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from esrag import _versions
from esrag._io import atomic_folder, recover_folder, sha256_file
from esrag.errors import InconsistentIndexError, IndexFormatError
from esrag.index.coarse import CoarseIndex
from esrag.index.config import CascadeConfig
from esrag.index.docstore import DocStore
from esrag.index.fine import FineStore
from esrag.index.fine_parts import part_name, part_names, read_parts
from esrag.index.manifest import COMPLETE_FORMAT, FORMAT_VERSION, FileEntry, Manifest
from esrag.index.query import QueryMap
from esrag.index.rows import RowMap
from esrag.index.state import IndexState, consistency_problem
from esrag.index.transforms import FittedTransform

__all__ = [
    "FORMAT_VERSION",
    "MANIFEST_FILE",
    "REQUIRED_FILES",
    "SHARDS_FILE",
    "TRANSFORM_ARRAY_FILES",
    "VERSIONS_DIR",
    "FileEntry",
    "Manifest",
    "data_folder",
    "is_index_folder",
    "load_state",
    "read_manifest",
    "save_state",
    "with_version",
]

logger = logging.getLogger(__name__)

_T = TypeVar("_T")
_WRITE_ERRORS = (errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EROFS, errno.EACCES)
"""Errors faiss only reports as text; the save's ``OSError`` gets their errno back."""

MANIFEST_FILE = "manifest.json"
VERSIONS_DIR = "versions"
COARSE_FILE = "coarse.faiss"
FINE_FILE = "fine.npy"
IDS_FILE = "ids.npy"
TOMBSTONES_FILE = "tombstones.npy"
DOCS_FILE = "docs.jsonl"
TRANSFORM_FILE = "transform.json"
MATRIX_FILE = "transform_matrix.npy"
BIAS_FILE = "transform_bias.npy"
SHARDS_FILE = "shards.json"
"""Top-level manifest of a sharded index folder (see :mod:`esrag.index.shardset`)."""
QUERY_MAP_FILE = "query_map.json"
QUERY_ARRAY_FILES = {"source": "query_map_source.npy", "fine": "query_map_fine.npy"}
REQUIRED_FILES = (COARSE_FILE, DOCS_FILE, FINE_FILE, IDS_FILE, TOMBSTONES_FILE, TRANSFORM_FILE)
"""Files every index folder holds (and its manifest must list with their checksums)."""
TRANSFORM_ARRAY_FILES = (BIAS_FILE, MATRIX_FILE)
"""Also required when the transform is not ``prefix``."""


# ---------------------------------------------------------------------- folders
def is_index_folder(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a folder holding an index manifest, or the top-level manifest of a
    sharded index (not whether it is intact).
    """
    path = Path(path)
    return path.is_dir() and ((path / MANIFEST_FILE).is_file() or (path / SHARDS_FILE).is_file())


def _parse_manifest(data: bytes, path: Path) -> Manifest:
    try:
        obj = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise IndexFormatError(f"{path}: unreadable manifest ({exc})") from None
    manifest = Manifest.from_json(obj, path=path)
    required = set(REQUIRED_FILES)
    if manifest.fine_parts is not None:
        required = (required - {FINE_FILE}) | set(part_names(manifest.fine_parts))
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
    return manifest


def _read_folder(folder: Path, verify: bool, load: Callable[[Manifest, Path], _T]) -> _T:
    """``load(manifest, folder of its files)`` on the current version, locked while it runs."""
    recover_folder(folder)
    path = folder / MANIFEST_FILE
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no index folder here")
    if not path.is_file():  # the manifest is replaced atomically, never removed
        raise IndexFormatError(f"{path}: missing manifest; {folder} is not an esrag index")
    parsed: dict[bytes, Manifest] = {}

    def resolve(data: bytes) -> str | None:
        parsed[data] = _parse_manifest(data, path)
        return parsed[data].version

    def checked(data: bytes, files: Path) -> _T:
        manifest = parsed[data]
        for name, entry in manifest.files.items():
            _check_file(files / name, entry, verify)
        return load(manifest, files)

    try:
        return _versions.read(folder, MANIFEST_FILE, VERSIONS_DIR, resolve, checked)
    except _versions.MissingVersionError as exc:
        raise IndexFormatError(f"{path}: {exc}") from None
    except OSError as exc:  # e.g. no permission to read the manifest or a listed file
        raise IndexFormatError(f"{exc.filename or path}: unreadable ({exc.strerror or exc})") from None


def with_version(folder: str | os.PathLike[str], load: Callable[[Manifest, Path], _T]) -> _T:
    """``load(manifest, folder of its files)`` on the current version, locked shared while it runs
    (sizes checked, not checksums): what a writer that reuses the version's files builds on.
    """
    return _read_folder(Path(folder), False, load)


def read_manifest(folder: str | os.PathLike[str], *, verify: bool = True) -> Manifest:
    """Read and check an index folder's manifest and (with ``verify``) every file's checksum."""
    return _read_folder(Path(folder), verify, lambda manifest, _files: manifest)


def data_folder(folder: str | os.PathLike[str]) -> Path:
    """The folder holding the files of the version ``folder``'s manifest names (``folder``
    itself for a format-1 index). For inspection only: nothing is checked or locked, and
    the next save may replace that version.
    """
    folder = Path(folder)
    try:
        version = json.loads((folder / MANIFEST_FILE).read_text(encoding="utf-8")).get("version")
    except (OSError, ValueError, AttributeError) as exc:
        raise IndexFormatError(f"{folder / MANIFEST_FILE}: unreadable manifest ({exc})") from None
    return folder / VERSIONS_DIR / version if isinstance(version, str) else folder


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
    """Write ``state`` (compacted to its live rows) as a new version of ``folder`` and publish it.

    ``identity``: the model fields of the manifest (``model_name``, ``model_fingerprint``,
    ``embedder_kind``, ``coarse_source_view``, ``fine_view``, ``identity``). The caller keeps
    the state from changing while this runs (the index's read lock). Raises
    :class:`~esrag.errors.InconsistentIndexError` (nothing written) when the state's parts
    disagree, and ``OSError`` naming ``folder`` when a write fails; the previous version
    stays in place either way.
    """
    folder = Path(folder)
    problem = consistency_problem(state)
    if problem:
        raise InconsistentIndexError(f"{folder}: not saved, the index is inconsistent ({problem})")
    recover_folder(folder)  # a swap of format 1 interrupted by a crash
    if folder.exists() and not folder.is_dir():
        raise NotADirectoryError(f"{folder}: is a file, not an index folder")
    rows = state.rows.live()
    filled = len(state.fine)
    parts = None if filled == state.rows.num_rows else ((filled,) if filled else ())
    manifest = Manifest(
        format_version=COMPLETE_FORMAT if parts is None else FORMAT_VERSION,
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
        fine_parts=parts,
    )
    try:
        if folder.is_dir():
            manifest = _publish(state, rows, manifest, folder)
        else:  # a new folder appears complete or not at all (a dangling symlink: at its target)
            with atomic_folder(Path(os.path.realpath(folder))) as tmp:
                manifest = _publish(state, rows, manifest, tmp)
    except (OSError, RuntimeError) as exc:
        code = getattr(exc, "errno", None)
        message = f"{folder}: saving the index failed ({exc}); the previous version is still in place"
        raise (OSError(code, message) if code else OSError(message)) from exc
    logger.info("saved index with %d documents to %s (version %s)", manifest.count, folder, manifest.version)
    return manifest


def _legacy_files(root: Path) -> tuple[str, ...]:
    """The data files of a format-1 folder at ``root`` (deleted once it is converted)."""
    try:
        flat = json.loads((root / MANIFEST_FILE).read_text(encoding="utf-8")).get("version") is None
    except (OSError, ValueError, AttributeError):
        return ()
    return (*REQUIRED_FILES, *TRANSFORM_ARRAY_FILES) if flat else ()


def _publish(state: IndexState, rows: np.ndarray, manifest: Manifest, root: Path) -> Manifest:
    with _versions.publish(root, MANIFEST_FILE, VERSIONS_DIR, legacy_files=_legacy_files(root)) as draft:
        _write_parts(state, rows, draft.path)
        files = {
            path.name: FileEntry(sha256_file(path), path.stat().st_size)
            for path in sorted(draft.path.iterdir())
            if path.is_file()
        }
        manifest = dataclasses.replace(manifest, files=files, version=draft.version)
        draft.pointer_data = manifest.dump()
    return manifest


def _write_parts(state: IndexState, rows: np.ndarray, tmp: Path) -> None:
    try:
        state.coarse.write(tmp / COARSE_FILE)
    except RuntimeError as exc:  # faiss reports a failed fwrite (a full disk) this way
        text = str(exc).strip().splitlines()[-1]
        code = next((c for c in _WRITE_ERRORS if os.strerror(c) in text), None)
        message = f"{tmp / COARSE_FILE}: {text}"
        raise (OSError(code, message) if code else OSError(message)) from exc
    if len(state.fine) == state.rows.num_rows:
        state.fine.write(tmp / FINE_FILE, rows)
    elif len(state.fine):  # coarse-only: the filled rows (the first ones) as part 0
        state.fine.write(tmp / part_name(0), rows[: len(state.fine)])
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

    def load(manifest: Manifest, files: Path) -> tuple[IndexState, Manifest]:
        config = _config(folder, manifest)
        if check is not None:
            check(manifest, config)
        return _load_parts(files, manifest, config, mmap), manifest

    state, manifest = _read_folder(folder, verify, load)
    logger.info("loaded index with %d documents from %s", manifest.count, folder)
    return state, manifest


def _load_parts(files: Path, manifest: Manifest, config: CascadeConfig, mmap: bool) -> IndexState:
    transform = _load_transform(files, manifest)
    try:
        dim, dtype = manifest.fine_dim, config.fine_dtype
        if manifest.fine_parts is None:
            fine = FineStore.read(files / FINE_FILE, dim=dim, dtype=dtype, count=manifest.count, mmap=mmap)
        else:
            fine = read_parts(files, manifest.fine_parts, dim=dim, dtype=dtype, mmap=mmap)
        docs, doc_ids = DocStore.read(files / DOCS_FILE, count=manifest.count)
    except ValueError as exc:
        raise IndexFormatError(str(exc)) from None
    coarse_ids = _load_ids(files / IDS_FILE, manifest.count)
    tombstones = _load_ids(files / TOMBSTONES_FILE, manifest.tombstones)
    try:
        rows = RowMap.restore(doc_ids, coarse_ids, manifest.next_id)
    except ValueError as exc:
        raise IndexFormatError(f"{files / IDS_FILE}: {exc}") from None
    coarse = _load_coarse(files, manifest, config, tombstones)
    query_map = _load_query_map(files, manifest)
    return IndexState(config, transform, coarse, fine, docs, rows, query_map)


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
