"""The sharded index folder: shards, each a self-contained index folder, under one manifest.

Layout of ``<folder>/``::

    shards.json              format version, routing, generation, next coarse id, counts,
                             and per shard: its folder, count, and its manifest's SHA-256
    shard-0000-g000001/      an index folder of the single-index format (esrag.index.format)
    shard-0001-g000001/
    ...

Every shard holds the documents whose id routes to it (:func:`shard_of`: a stable 64-bit
BLAKE2b hash of the id, modulo the shard count); all shards share one fitted coarse
transform and one trained coarse quantizer, and their coarse ids come from one counter, so
the shards together rank exactly like one index of the same documents. A shard can be
loaded (and served) alone with :meth:`CascadeIndex.load <esrag.index.CascadeIndex.load>`.

Atomicity: a save writes the shards it changed into *new* folders (the next generation's
names, each through the atomic single-index save), then replaces ``shards.json`` atomically
(:func:`esrag._io.atomic_write_json`), then deletes the folders the new manifest no longer
lists. A crash at any point leaves the previous ``shards.json`` and every folder it lists in
place. Loads check the top-level manifest and each shard manifest's size and checksum
(which in turn checks every file of the shard). One writer at a time per folder.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import re
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from esrag._io import atomic_write_json, recover_folder, sha256_file
from esrag.errors import IndexFormatError
from esrag.index.format import MANIFEST_FILE, SHARDS_FILE, Manifest, read_manifest
from esrag.validation import is_int

__all__ = [
    "ROUTING",
    "SHARDSET_FORMAT_VERSION",
    "ShardEntry",
    "ShardSetManifest",
    "index_manifest",
    "is_sharded_folder",
    "new_shard_folder",
    "read_shardset",
    "remove_unlisted",
    "shard_entry",
    "shard_of",
    "shards_of",
    "write_shardset",
]

logger = logging.getLogger(__name__)

SHARDSET_FORMAT_VERSION = 1
ROUTING = "blake2b-64-mod"
"""How an id picks its shard: ``int.from_bytes(blake2b(id, digest_size=8), "little") % n``."""
_SHARD_DIR = re.compile(r"shard-(\d{4})-g(\d{6})")


def shard_of(doc_id: str, n_shards: int) -> int:
    """The shard of ``doc_id`` among ``n_shards`` (stable across processes and machines)."""
    digest = hashlib.blake2b(doc_id.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "little") % n_shards


def shards_of(doc_ids: Sequence[str], n_shards: int) -> np.ndarray:
    """:func:`shard_of` of every id, as an int64 array."""
    return np.fromiter((shard_of(i, n_shards) for i in doc_ids), dtype=np.int64, count=len(doc_ids))


@dataclass(frozen=True)
class ShardEntry:
    """One shard: its folder (relative to the sharded folder), documents, manifest checksum."""

    path: str
    count: int
    manifest_sha256: str
    manifest_bytes: int


@dataclass(frozen=True)
class ShardSetManifest:
    """What a sharded folder holds; ``shards[i]`` is shard ``i``. Written last, read first."""

    format_version: int
    routing: str
    generation: int
    next_id: int
    """The coarse id the next added document gets (one counter for all shards)."""
    count: int
    shards: tuple[ShardEntry, ...]
    created_at: str = dataclasses.field(
        default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds")
    )

    def to_json(self) -> dict[str, Any]:
        """The manifest as a JSON object."""
        out = dataclasses.asdict(self)
        out["shards"] = [dataclasses.asdict(s) for s in self.shards]
        return out

    @classmethod
    def from_json(cls, data: Any, *, path: Path) -> ShardSetManifest:
        """Parse and check a top-level manifest; errors name ``path``."""
        if not isinstance(data, dict):
            raise IndexFormatError(f"{path}: the manifest is not a JSON object")
        version = data.get("format_version")
        if not is_int(version):
            raise IndexFormatError(f"{path}: missing or invalid 'format_version'")
        if version > SHARDSET_FORMAT_VERSION:
            raise IndexFormatError(
                f"{path}: sharded index format {version} is newer than this esrag supports "
                f"({SHARDSET_FORMAT_VERSION}); upgrade esrag to load it"
            )
        if data.get("routing") != ROUTING:
            raise IndexFormatError(f"{path}: unknown routing {data.get('routing')!r} (expected {ROUTING!r})")
        for name in ("generation", "next_id", "count"):
            if not (is_int(data.get(name)) and data[name] >= 0):
                raise IndexFormatError(f"{path}: field {name!r} must be a non-negative int")
        shards = data.get("shards")
        if not isinstance(shards, list) or not shards:
            raise IndexFormatError(f"{path}: field 'shards' must be a non-empty list")
        entries = tuple(_entry(path, i, s) for i, s in enumerate(shards))
        if sum(e.count for e in entries) != data["count"]:
            raise IndexFormatError(f"{path}: the shard counts do not add up to 'count' ({data['count']})")
        return cls(
            format_version=version,
            routing=ROUTING,
            generation=data["generation"],
            next_id=data["next_id"],
            count=data["count"],
            shards=entries,
            created_at=str(data.get("created_at", "")),
        )


def _entry(path: Path, i: int, data: Any) -> ShardEntry:
    try:
        entry = ShardEntry(data["path"], data["count"], data["manifest_sha256"], data["manifest_bytes"])
    except (TypeError, KeyError) as exc:
        raise IndexFormatError(f"{path}: shards[{i}] lacks {exc}") from None
    if not (isinstance(entry.path, str) and _SHARD_DIR.fullmatch(entry.path)):
        raise IndexFormatError(f"{path}: shards[{i}].path {entry.path!r} is not a shard folder name")
    if not all(is_int(v) and v >= 0 for v in (entry.count, entry.manifest_bytes)):
        raise IndexFormatError(f"{path}: shards[{i}] counts must be non-negative ints")
    if not isinstance(entry.manifest_sha256, str):
        raise IndexFormatError(f"{path}: shards[{i}].manifest_sha256 must be a str")
    return entry


def is_sharded_folder(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` holds a sharded index's top-level manifest (not whether it is intact)."""
    return (Path(path) / SHARDS_FILE).is_file()


def read_shardset(folder: str | os.PathLike[str]) -> ShardSetManifest:
    """Read and check ``folder/shards.json`` and the size and checksum of each shard's manifest."""
    folder = Path(folder)
    path = folder / SHARDS_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise IndexFormatError(f"{path}: missing; {folder} is not a sharded esrag index") from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise IndexFormatError(f"{path}: unreadable manifest ({exc})") from None
    manifest = ShardSetManifest.from_json(data, path=path)
    for i, entry in enumerate(manifest.shards):
        file = folder / entry.path / MANIFEST_FILE
        if not file.is_file():
            raise IndexFormatError(f"{file}: shard {i} listed in {path} is missing")
        if file.stat().st_size != entry.manifest_bytes or sha256_file(file) != entry.manifest_sha256:
            raise IndexFormatError(f"{file}: shard {i} does not match {path} (checksum mismatch)")
    return manifest


def new_shard_folder(folder: Path, shard: int, generation: int) -> Path:
    """Where shard ``shard`` of generation ``generation`` is written."""
    return folder / f"shard-{shard:04d}-g{generation:06d}"


def shard_entry(folder: Path, shard_folder: Path, count: int) -> ShardEntry:
    """The :class:`ShardEntry` of a written shard folder (inside ``folder``)."""
    file = shard_folder / MANIFEST_FILE
    return ShardEntry(
        shard_folder.relative_to(folder).as_posix(), int(count), sha256_file(file), file.stat().st_size
    )


def write_shardset(folder: Path, manifest: ShardSetManifest) -> None:
    """Atomically replace ``folder/shards.json`` (the shards it lists are written already)."""
    atomic_write_json(folder / SHARDS_FILE, manifest.to_json())
    logger.info(
        "saved sharded index with %d documents in %d shards to %s",
        manifest.count,
        len(manifest.shards),
        folder,
    )


def remove_unlisted(folder: Path, manifest: ShardSetManifest) -> None:
    """Delete shard folders ``manifest`` does not list (older generations, interrupted saves)."""
    listed = {entry.path for entry in manifest.shards}
    for child in folder.iterdir():
        if _SHARD_DIR.fullmatch(child.name) and child.name not in listed and child.is_dir():
            shutil.rmtree(child, ignore_errors=True)
        elif child.name.startswith(".shard-") and ".tmp-" in child.name:
            recover_folder(folder / child.name[1:].split(".tmp-")[0])  # stale temporary shards


def index_manifest(folder: str | os.PathLike[str], *, verify: bool = True) -> Manifest:
    """The model-describing manifest of an index folder: its own, or a sharded index's first
    shard's (every shard records the same model).
    """
    folder = Path(folder)
    if is_sharded_folder(folder):
        return read_manifest(folder / read_shardset(folder).shards[0].path, verify=verify)
    return read_manifest(folder, verify=verify)
