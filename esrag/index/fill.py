"""Committing a chunk of filled-in fine vectors to a coarse-only index folder (format 3).

A commit publishes a new version (:mod:`esrag._versions`) holding the current version's files
(hard links: a version's files never change once published; copies where the file system has
no links), one new part file with the chunk's fine vectors (:mod:`esrag.index.fine_parts`) and
a manifest listing it, so a commit costs the chunk, not the index. An interruption at any
point (Ctrl-C, a kill, a full disk) leaves the previous version in place; a rerun resumes
after the last committed chunk. The last chunk is not committed here: the caller saves the
complete index as an ordinary version (``CascadeIndex.save``).
"""

from __future__ import annotations

import dataclasses
import os
import shutil
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from esrag import _versions
from esrag._io import sha256_file
from esrag.errors import IndexFormatError
from esrag.index.fine_parts import part_name
from esrag.index.format import MANIFEST_FILE, VERSIONS_DIR, FileEntry, Manifest, with_version
from esrag.index.state import IndexState

__all__ = ["commit_chunk"]


class _WriteFailed(RuntimeError):
    """A write of the commit failed (carried out of the version read, which reports OSErrors as
    unreadable files).
    """


def _link(source: Path, target: Path) -> None:
    try:
        os.link(source, target)
    except OSError:  # no hard links here (another file system, FAT, ...)
        shutil.copyfile(source, target)


def commit_chunk(
    folder: str | os.PathLike[str], state: IndexState, start: int, stop: int, version: str
) -> Manifest:
    """Publish rows ``start:stop`` of ``state``'s fine store as the next part of ``folder``,
    whose current version must be ``version`` holding the fine vectors of rows ``0:start``.
    Returns the new manifest.
    """
    folder = Path(folder)

    def commit(manifest: Manifest, files: Path) -> Manifest:
        if manifest.version != version or manifest.fine_parts is None or manifest.fine_count != start:
            raise IndexFormatError(
                f"{folder}: changed by another writer during the fill-in (version {manifest.version}, "
                f"fine vectors for {manifest.fine_count} rows; expected version {version} with {start})"
            )
        try:
            with _versions.publish(folder, MANIFEST_FILE, VERSIONS_DIR) as draft:
                for name in manifest.files:
                    _link(files / name, draft.path / name)
                name = part_name(len(manifest.fine_parts))
                state.fine.write(draft.path / name, np.arange(start, stop, dtype=np.int64))
                entry = FileEntry(sha256_file(draft.path / name), (draft.path / name).stat().st_size)
                new = dataclasses.replace(
                    manifest,
                    files={**manifest.files, name: entry},
                    version=draft.version,
                    fine_parts=(*manifest.fine_parts, stop - start),
                    created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
                )
                draft.pointer_data = new.dump()
        except (OSError, RuntimeError) as exc:
            raise _WriteFailed(str(exc)) from exc
        return new

    try:
        return with_version(folder, commit)
    except _WriteFailed as exc:
        raise OSError(
            f"{folder}: committing fine vectors failed ({exc}); the previous version is in place"
        ) from exc
