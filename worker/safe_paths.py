"""Paths a stranger can change, resolved one folder at a time from a directory we opened.

A writer of the inbox can swap any folder on a path for a symlink between two system calls.
So, as CPython's ``shutil.rmtree`` does in ``_rmtree_safe_fd``, a relative path is never joined
onto a string and handed to the kernel: each folder is opened from the one before with
``O_NOFOLLOW | O_DIRECTORY`` (a symlink in the way fails with ELOOP or ENOTDIR), and the last
step is an ``*at`` call (``os.rename(..., src_dir_fd=, dst_dir_fd=)``, ``os.lstat(name, dir_fd=)``)
relative to the folder's fd. Each component is at most NAME_MAX, so this also reaches paths
longer than PATH_MAX.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

NAME_MAX = 255  # bytes in one file name on Linux file systems
# O_NONBLOCK: a FIFO where a folder should be must fail, not block the open.
FOLDER_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK


class UnsafePath(OSError):
    """A relative path that could leave its folder: empty, absolute, with NUL, ``.`` or ``..``."""


def parts_of(rel: str) -> list[str] | None:
    """The components of ``rel`` if it stays below its folder: not empty, not absolute, no
    empty, ``.`` or ``..`` component, no NUL; None otherwise."""
    if not rel or rel.startswith("/") or "\0" in rel:
        return None
    parts = rel.split("/")
    if any(part in ("", ".", "..") for part in parts):
        return None
    return parts


def checked_parts(rel: str) -> list[str]:
    parts = parts_of(rel)
    if parts is None:
        raise UnsafePath(errno.EINVAL, f"not a safe relative path: {rel!r}")
    return parts


def open_folder(root_fd: int, parts: list[str]) -> int:
    """A new fd on the folder ``parts`` below ``root_fd``; never through a symlink."""
    fd = os.open(".", FOLDER_FLAGS, dir_fd=root_fd)
    for part in parts:
        try:
            child = os.open(part, FOLDER_FLAGS, dir_fd=fd)
        finally:
            os.close(fd)
        fd = child
    return fd


def make_folders(root_fd: int, parts: list[str], mode: int = 0o755) -> int:
    """``mkdir -p`` of ``parts`` below ``root_fd``, never through a symlink (a symlink or a file
    on the way: ENOTDIR or ELOOP); a new fd on the last."""
    fd = os.open(".", FOLDER_FLAGS, dir_fd=root_fd)
    for part in parts:
        try:
            child = _open_or_make(fd, part, mode)
        finally:
            os.close(fd)
        fd = child
    return fd


def _open_or_make(folder: int, name: str, mode: int) -> int:
    """Opened first: the folder is there far more often than not."""
    try:
        return os.open(name, FOLDER_FLAGS, dir_fd=folder)
    except FileNotFoundError:
        pass
    try:
        os.mkdir(name, mode, dir_fd=folder)
    except FileExistsError:  # made by another daemon meanwhile (or a symlink: refused below)
        pass
    return os.open(name, FOLDER_FLAGS, dir_fd=folder)


@contextmanager
def parent_of(root_fd: int, rel: str) -> Iterator[tuple[int, str]]:
    """(an fd on the folder holding ``rel``, its last name), for an ``*at`` call."""
    parts = checked_parts(rel)
    if len(parts) == 1:  # the usual case, a file at the top: no folder to open
        yield root_fd, parts[0]
        return
    fd = open_folder(root_fd, parts[:-1])
    try:
        yield fd, parts[-1]
    finally:
        os.close(fd)


@contextmanager
def opened(folder: Path | str) -> Iterator[int]:
    """An fd on a folder we were given (the configured inbox: symlinks to it are the admin's)."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        yield fd
    finally:
        os.close(fd)


def lstat_below(root: Path | str, rel: str) -> os.stat_result:
    """``os.lstat`` of ``root/rel`` without following a symlink on the way (and past PATH_MAX)."""
    with opened(root) as root_fd, parent_of(root_fd, rel) as (fd, name):
        return os.lstat(name, dir_fd=fd)


def lstat_at(folder_fd: int, name: str) -> os.stat_result | None:
    """``os.lstat`` of ``name`` in the open folder; None if there is nothing by that name."""
    try:
        return os.lstat(name, dir_fd=folder_fd)
    except FileNotFoundError:
        return None


def exists_at(folder_fd: int, name: str) -> bool:
    return lstat_at(folder_fd, name) is not None


def files_below(root_fd: int, parts: list[str]) -> Iterator[list[str]]:
    """The paths (as parts) of everything but folders below ``parts``, walked by fds: a
    symlink is listed, never followed."""
    fd = open_folder(root_fd, parts)
    try:
        entries = sorted((entry.name, entry.is_dir(follow_symlinks=False)) for entry in os.scandir(fd))
    finally:
        os.close(fd)
    for name, is_dir in entries:
        if is_dir:
            yield from files_below(root_fd, [*parts, name])
        else:
            yield [*parts, name]
