"""Versioned folders: a writer publishes complete versions atomically, readers never see a mix.

Layout of a versioned folder ``<root>/`` (the names of the pointer file and of the versions
folder are the caller's)::

    <pointer>                 names the current version; replaced atomically (os.replace)
    <versions>/<id>/          one complete version per folder, never changed once published
    <versions>/.tmp-<random>  a version being written (or left by a writer that was killed)

**Writing** (:func:`publish`): the new version is written into a ``.tmp-`` folder inside
``<versions>``, fsynced, renamed to its id, and then published by atomically replacing the
pointer. The root folder itself is never renamed or replaced, so a root that is a symlink
stays one (the versions are written inside its target). A crash at any point leaves the
previous pointer, hence the previous version, in place.

**Reading** (:func:`read`): the pointer is read once, the version it names is locked
shared (``flock`` on the version's folder) and every file is opened from that version, so
a reader sees the old or the new version, never a mix of two.

**Deleting old versions**: after publishing, the writer removes every version that is not
current and whose lock it can take exclusively without waiting, i.e. that no reader (and no
writer still writing it) holds; a busy one is left for the next save. A reader that read
the pointer just before a version was deleted finds the folder gone (or replaced) once it
holds the lock, and reads the pointer again. Writers serialise publishing and deleting
with an exclusive lock on ``<versions>``. On platforms without ``fcntl`` there are no
locks: an old version is deleted only when its successor is older than
:data:`GRACE_SECONDS` (a draft: when it is itself that old), which a reader's load must
not outlast.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

from esrag._io import atomic_write_bytes, fsync_dir, fsync_tree

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

__all__ = ["GRACE_SECONDS", "Draft", "MissingVersionError", "new_version_id", "publish", "read"]

GRACE_SECONDS = 600.0
"""Without ``fcntl``: how long a superseded version is kept for readers still loading it."""

_TEMP = ".tmp-"
_TRASH = ".trash-"
_READ_TRIES = 50

T = TypeVar("T")


class MissingVersionError(FileNotFoundError):
    """The pointer names a version whose folder does not exist (and the pointer is not moving)."""


def new_version_id() -> str:
    """A fresh version id: sortable by creation time, unique across processes."""
    return f"{time.time_ns():020d}-{secrets.token_hex(4)}"


# ---------------------------------------------------------------------- locks
@contextlib.contextmanager
def _locked(path: Path, *, exclusive: bool, wait: bool) -> Iterator[bool]:
    """Hold an ``flock`` on the folder ``path``; yields whether it is held on the folder that is
    still at ``path`` (False: it is gone or was replaced, or ``wait`` is False and it is busy).
    """
    if fcntl is None:  # pragma: no cover - Windows: no locks
        yield path.is_dir()
        return
    try:
        fd = os.open(path, os.O_RDONLY)
    except (FileNotFoundError, NotADirectoryError):
        yield False
        return
    try:
        mode = (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | (0 if wait else fcntl.LOCK_NB)
        try:
            fcntl.flock(fd, mode)
        except BlockingIOError:
            yield False
            return
        try:
            here = os.stat(path)
        except FileNotFoundError:
            yield False
            return
        mine = os.fstat(fd)
        yield (here.st_ino, here.st_dev) == (mine.st_ino, mine.st_dev)
    finally:
        os.close(fd)  # releases the lock


# ---------------------------------------------------------------------- reading
def read(
    root: Path,
    pointer: str,
    versions: str,
    resolve: Callable[[bytes], str | None],
    load: Callable[[bytes, Path], T],
) -> T:
    """``load(pointer bytes, folder of the version they name)`` with that version locked.

    ``resolve(pointer bytes)`` gives the version id, or ``None`` for a folder of an older,
    unversioned layout whose files lie in ``root`` itself (``load`` then runs on ``root``; if
    it fails while the pointer changes under it, the read is retried). A missing pointer
    raises ``FileNotFoundError``; a version folder that is missing while the pointer stays
    the same raises :class:`MissingVersionError`.
    """
    for _attempt in range(_READ_TRIES):
        data = (root / pointer).read_bytes()
        version = resolve(data)
        if version is None:
            try:
                return load(data, root)
            except Exception:
                if _pointer_moved(root / pointer, data):
                    continue  # an upgrade to the versioned layout replaced the files
                raise
        folder = root / versions / version
        with _locked(folder, exclusive=False, wait=True) as held:
            if held:
                return load(data, folder)
        if not _pointer_moved(root / pointer, data):
            raise MissingVersionError(f"{folder}: the version named by {root / pointer} is missing")
    raise RuntimeError(f"{root}: the index changed {_READ_TRIES} times while it was being read")


def _pointer_moved(path: Path, data: bytes) -> bool:
    try:
        return path.read_bytes() != data
    except FileNotFoundError:
        return True


# ---------------------------------------------------------------------- writing
class Draft:
    """A version being written: put its files in :attr:`path`, then set :attr:`pointer_data`
    (the bytes the pointer file will hold once it is published).
    """

    def __init__(self, path: Path, version: str) -> None:
        self.path = path
        self.version = version
        self.pointer_data: bytes | None = None


def _make_temp(folder: Path, stack: contextlib.ExitStack) -> Path:
    """A new ``.tmp-`` folder in ``folder``, locked shared (so no pruner takes it) for ``stack``."""
    while True:
        path = folder / f"{_TEMP}{secrets.token_hex(8)}"
        os.mkdir(path, 0o777)
        lock = stack.enter_context(_locked(path, exclusive=False, wait=True))
        if lock:
            return path
        # a pruner removed it between mkdir and the lock (it looked abandoned): make another


@contextlib.contextmanager
def publish(
    root: Path, pointer: str, versions: str, *, legacy_files: tuple[str, ...] = ()
) -> Iterator[Draft]:
    """Write a new version and publish it (see the module docstring).

    ``root`` must be an existing folder. On an exception inside the block the draft is
    removed and nothing changes. ``legacy_files``: names of an older unversioned layout
    that are deleted from ``root`` once the first version is published.
    """
    store = root / versions
    store.mkdir(exist_ok=True)
    with contextlib.ExitStack() as stack:
        tmp = _make_temp(store, stack)
        draft = Draft(tmp, new_version_id())
        try:
            yield draft
            if draft.pointer_data is None:
                raise RuntimeError("publish: the pointer data was never set")
            fsync_tree(tmp)
            os.rename(tmp, store / draft.version)  # still locked: the fd follows the folder
            fsync_dir(store)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        with _locked(store, exclusive=True, wait=True):
            try:
                atomic_write_bytes(root / pointer, draft.pointer_data)
            except BaseException:
                if _pointer_moved(root / pointer, draft.pointer_data):  # not published: drop it
                    shutil.rmtree(store / draft.version, ignore_errors=True)
                raise
            for name in legacy_files:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(root / name)
            _prune(store, draft.version)


def _prune(store: Path, current: str) -> None:
    """Delete every entry of ``store`` except ``current`` that nobody holds (writer lock held)."""
    names = sorted(p.name for p in store.iterdir() if p.name != current)
    versions = [n for n in names if not n.startswith((_TEMP, _TRASH))]
    successor = dict(zip(versions, [*versions[1:], current], strict=False))  # each one's next
    for name in names:
        path = store / name
        if not path.is_dir() or path.is_symlink():
            continue
        if fcntl is None and not _expired(store / successor[name] if name in successor else path):
            continue  # pragma: no cover - no locks: keep it while a reader (or writer) may use it
        with _locked(path, exclusive=True, wait=False) as free:
            if not free:
                continue  # a reader is loading it, or a writer is still writing it
            if not name.startswith(_TRASH):
                trash = store / f"{_TRASH}{secrets.token_hex(8)}"
                os.rename(path, trash)  # readers that resolve it now see it gone
                path = trash
        shutil.rmtree(path, ignore_errors=True)


def _expired(since: Path) -> bool:  # pragma: no cover - Windows
    """Whether ``since`` (a superseded version's successor, or a draft) is older than the grace."""
    try:
        return since.stat().st_mtime < time.time() - GRACE_SECONDS
    except FileNotFoundError:
        return True
