"""Atomic, crash-safe file and folder writes shared by indexes, encoders and checkpoints.

A folder is written into a temporary sibling, every file is fsynced, and only then is it
renamed over the target. A crash at any point leaves either the previous folder or the new
one in place, never a half-written mix.

Permissions follow the process umask, as with a plain ``mkdir``/``open``: temporary files
and folders are created with mode 0o666/0o777 (minus the umask), not the private
0o600/0o700 of :mod:`tempfile`, so the final file or folder is what a normal write gives.

Temporary siblings are named ``.<name>.tmp-<pid>-<random>`` (and ``.<name>.old-<pid>-<random>``
during the swap), so a later :func:`recover_folder` can tell a leftover of a killed writer
(its process is gone) from a save in progress.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import secrets
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = [
    "atomic_folder",
    "atomic_write_bytes",
    "atomic_write_json",
    "fsync_dir",
    "fsync_tree",
    "recover_folder",
    "sha256_file",
]

_CHUNK = 1 << 20
_LEGACY_STALE_SECONDS = 3600.0
"""Age after which a temporary folder without an owner pid (older esrag) counts as stale."""

_lock = threading.Lock()
_active: set[str] = set()
"""Temporary and ``.old-`` siblings that an :func:`atomic_folder` of this process owns now."""


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex SHA-256 of a file's bytes, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(_CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def fsync_dir(path: str | os.PathLike[str]) -> None:
    """Fsync a folder (so the renames and new names inside it are durable)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(root: str | os.PathLike[str]) -> None:
    """Fsync every file and folder below ``root`` (and ``root`` itself)."""
    root = Path(root)
    for dirpath, _dirnames, filenames in os.walk(root):
        for name in filenames:
            fd = os.open(Path(dirpath) / name, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        fsync_dir(Path(dirpath))


def _sibling_name(target: Path, kind: str) -> Path:
    """``.<name>.<kind>-<pid>-<random>`` beside ``target``."""
    return target.parent / f".{target.name}.{kind}-{os.getpid()}-{secrets.token_hex(6)}"


def _make_temp_dir(target: Path) -> Path:
    """A new empty folder beside ``target``, mode 0o777 minus the umask (like ``mkdir``)."""
    while True:
        path = _sibling_name(target, "tmp")
        try:
            os.mkdir(path, 0o777)
        except FileExistsError:  # pragma: no cover - 48 random bits
            continue
        return path


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` through a fsynced temporary file and an atomic rename.

    A new file gets mode 0o666 minus the umask, as with a plain ``open``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    while True:
        tmp = path.parent / f".{path.name}.{secrets.token_hex(6)}.tmp"
        try:
            fd = os.open(tmp, flags, 0o666)
        except FileExistsError:  # pragma: no cover - 48 random bits
            continue
        break
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_json(path: str | os.PathLike[str], obj: Any) -> None:
    """Atomically write ``obj`` as indented UTF-8 JSON."""
    text = json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
    atomic_write_bytes(path, text.encode("utf-8"))


@contextlib.contextmanager
def atomic_folder(target: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a fresh temporary folder that replaces ``target`` atomically on success.

    Usage::

        with atomic_folder("indexes/docs") as tmp:
            (tmp / "manifest.json").write_text(...)

    The folder is ``.<name>.tmp-<pid>-<random>`` beside ``target`` (mode 0o777 minus the
    umask). It first calls :func:`recover_folder`, which also removes temporary folders
    left by writers that were killed. On an exception the temporary folder is removed and
    ``target`` is untouched. On success the files are fsynced, the old ``target`` (if any)
    is moved aside to ``.<name>.old-<pid>-<random>``, the new folder is renamed into place
    and the old one deleted. A crash between the two renames leaves the ``.old-`` folder
    beside a missing ``target``; :func:`recover_folder` (called by saves and loaders)
    moves it back.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    recover_folder(target)
    with _lock:
        tmp = _make_temp_dir(target)
        _active.add(str(tmp))
    old: Path | None = None
    try:
        try:
            yield tmp
            fsync_tree(tmp)
            with _lock:  # no recover_folder of this process sees the half-swapped state
                if target.exists():
                    old = _sibling_name(target, "old")
                    _active.add(str(old))
                    os.replace(target, old)
                try:
                    os.replace(tmp, target)
                except BaseException:
                    if old is not None:  # put the previous folder back
                        os.replace(old, target)
                        old = None
                    raise
            fsync_dir(target.parent)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        with _lock:
            _active.discard(str(tmp))
            if old is not None:
                _active.discard(str(old))


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, OSError):
        return True  # exists under another user, or cannot tell: keep its folder
    return True


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


def _is_stale(path: Path, pid: int | None) -> bool:
    """Whether a ``.tmp-``/``.old-`` sibling is a leftover nobody is writing any more."""
    if pid is None:  # written by an older esrag (no owner recorded): go by age
        return 0.0 < _mtime(path) < time.time() - _LEGACY_STALE_SECONDS
    if pid == os.getpid():
        return str(path) not in _active
    return not _pid_alive(pid)


def _siblings(target: Path, kind: str) -> list[tuple[Path, int | None]]:
    """``(path, owner pid or None)`` of the ``.<name>.<kind>-*`` folders of ``target``."""
    pattern = re.compile(rf"\.{re.escape(target.name)}\.{kind}-(?:(\d+)-[0-9a-f]+|[a-z0-9_]{{8}})")
    out = []
    for path in target.parent.iterdir():
        match = pattern.fullmatch(path.name)
        if match is not None and path.is_dir() and not path.is_symlink():
            out.append((path, int(match.group(1)) if match.group(1) else None))
    return out


def recover_folder(target: str | os.PathLike[str]) -> None:
    """Undo an interrupted :func:`atomic_folder` swap and drop stale temporary folders.

    Called by every :func:`atomic_folder` (saves) and by loaders. Only siblings of
    ``target`` itself are touched (``.<name>.tmp-*`` and ``.<name>.old-*``), and only
    stale ones: a sibling is stale when the process that created it (the pid in its name)
    no longer runs, or, for one of this process, when no :func:`atomic_folder` of this
    process is using it. A save in progress in another live process, or in another
    thread of this one, is left alone. (A ``.tmp-`` folder without a recorded pid, from an
    older esrag, counts as stale after an hour; such an ``.old-`` folder at once.) The pid
    test assumes that processes on other machines do not save into the same folder
    concurrently.

    If ``target`` is missing but a stale ``.<name>.old-*`` folder exists (a crash between
    the two renames), the newest such folder is moved back to ``target``.
    """
    target = Path(target)
    if not target.parent.is_dir():
        return
    with _lock:
        try:
            # an .old- folder only exists for the instant of a swap: one without a pid (older
            # esrag) is a crash leftover at once
            olds = [p for p, pid in _siblings(target, "old") if pid is None or _is_stale(p, pid)]
            temps = [p for p, pid in _siblings(target, "tmp") if _is_stale(p, pid)]
        except OSError:  # unreadable parent: nothing to recover
            return
        olds.sort(key=_mtime)
        if not target.exists() and olds:
            os.replace(olds.pop(), target)
    for stale in olds + temps:
        shutil.rmtree(stale, ignore_errors=True)
