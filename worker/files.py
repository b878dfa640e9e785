"""Writes that are whole or absent: atomic, synced writes of a file in a folder, and the
fsyncs that make a rename survive a power cut. A name is written in an open folder, replacing
a symlink at it, never what it points to."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path
from typing import BinaryIO

# The process's umask, read once (reading it means setting it): files made by mkstemp (0600)
# get the permissions a plain open() would give, so a card or a report stays readable to others.
_UMASK = os.umask(0o022)
os.umask(_UMASK)
# A file made by one name in a folder already open: only a new one, never through a symlink.
_NEW_FILE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


def plain_mode(mode: int) -> int:
    """``mode`` less the umask: what a plain open() or mkdir() would give."""
    return mode & ~_UMASK


def write_atomic(path: Path, data: str | bytes) -> None:
    """Write ``path`` whole or not at all (see ``write_atomic_at``), in a folder the caller
    named itself."""
    path = Path(path)
    folder = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        write_atomic_at(folder, path.name, data)
    finally:
        os.close(folder)


def write_atomic_at(folder: int, name: str, data: str | bytes) -> None:
    """Write ``name`` in the open ``folder`` whole or not at all: a synced temporary file
    beside it, renamed over it, then the folder synced so the rename survives a power cut. The
    rename replaces a symlink at ``name``, never what it points to."""
    raw = data.encode("utf-8") if isinstance(data, str) else data
    _refuse_special(folder, name)
    tmp, fh = _new_temporary(folder, f".{_cut(name, 200)}.")
    try:
        with fh:
            fh.write(raw)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, name, src_dir_fd=folder, dst_dir_fd=folder)
    except BaseException:
        unlink_quietly(tmp, dir_fd=folder)
        raise
    os.fsync(folder)


def _refuse_special(folder: int, name: str) -> None:
    """A device, FIFO, socket or folder at ``name`` is never replaced: a report written to
    ``/dev/null`` by root would otherwise put a file in the device's place."""
    try:
        mode = os.lstat(name, dir_fd=folder).st_mode
    except FileNotFoundError:
        return
    if not (stat.S_ISREG(mode) or stat.S_ISLNK(mode)):
        raise IsADirectoryError(errno.EINVAL, f"{name} is not a regular file; it is not replaced")


def _new_temporary(folder: int, prefix: str) -> tuple[str, BinaryIO]:
    """A new file of a random name in ``folder`` (as ``mkstemp`` makes, with the permissions a
    plain open would give): its name and its binary writer."""
    for _ in range(100):
        name = f"{prefix}{os.urandom(6).hex()}.tmp"
        try:
            return name, create_at(folder, name, 0o666)
        except FileExistsError:
            continue
    raise FileExistsError(errno.EEXIST, f"no free temporary name starting {prefix}")


def create_at(folder: int, name: str, mode: int) -> BinaryIO:
    """A new file ``name`` in ``folder``, opened for writing: never an existing one, never
    through a symlink."""
    return os.fdopen(os.open(name, _NEW_FILE, mode, dir_fd=folder), "wb")


def _cut(name: str, size: int) -> str:
    """The first ``size`` bytes of ``name`` (a cut character kept as its bytes)."""
    return os.fsdecode(os.fsencode(name)[:size])


def sync_folder(folder: Path) -> None:
    sync_file(folder)


def sync_file(path: Path) -> None:
    """fsync a file (or a folder: its entries) by its path."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def unlink_quietly(path: Path | str, *, dir_fd: int | None = None) -> None:
    try:
        os.unlink(path, dir_fd=dir_fd)
    except FileNotFoundError:
        pass
