"""The archive folders (the outbox's ``processed/`` and ``failed/``): an input is put at the first
of its destinations that takes it, a link (or copy) that picks another name rather than replace
what is there. Paths an inbox writer chose are made under an open ``Folder``, one name at a
time, never through a symlink."""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path, PurePosixPath

from worker.files import unlink_quietly, write_atomic_at
from worker.link_or_copy import TooBig, put_at
from worker.safe_paths import FOLDER_FLAGS, NAME_MAX, checked_parts, make_folders

# Errors that say the disk or the file system is in trouble, not one file: wait and retry.
DISK_TROUBLE = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EROFS})
# A suffix longer than this is no file type; the last-resort name drops it.
MAX_SUFFIX = 16


def is_disk_trouble(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in DISK_TROUBLE


def destinations(folder: Path, rel: str, claim_id: str, *, reserve: int = 0) -> Iterator[Path]:
    """``relative_destinations`` under ``folder``, as paths (for readers of the archive)."""
    return (folder / dest for dest in relative_destinations(rel, claim_id, reserve=reserve))


def relative_destinations(rel: str, claim_id: str, *, reserve: int = 0) -> Iterator[str]:
    """Where an input may go, in order: its own path; ``x.<id>.png`` beside it (the plain name is
    taken); ``<id>.png`` at the top of the folder (a name that always fits, under no subfolder
    that could be a file or a symlink). A name that would not fit NAME_MAX with ``reserve``
    bytes to spare (for ``.error.json``) is skipped. Made lazily: the first one almost always
    serves."""
    parent, _, name = rel.rpartition("/")
    if _fits(name, reserve):
        yield rel
    suffix = "".join(PurePosixPath(name).suffixes[-1:])
    stem = name[: len(name) - len(suffix)] if suffix else name
    beside = f"{stem}.{claim_id}{suffix}"
    if _fits(beside, reserve):
        yield f"{parent}/{beside}" if parent else beside
    yield f"{claim_id}{suffix if len(os.fsencode(suffix)) <= MAX_SUFFIX else ''}"


def _fits(name: str, reserve: int) -> bool:
    return len(os.fsencode(name)) + reserve <= NAME_MAX


def open_folder(path: Path) -> int:
    """Open the folder ``path`` (made if missing): a real folder, not a symlink to one. The
    folders above it are the operator's choice (settings), followed as given."""
    os.makedirs(path, exist_ok=True)
    return os.open(path, FOLDER_FLAGS)


class Folder:
    """A folder of the daemon's own (the outbox's ``processed/`` or ``failed/``), held open.

    The paths put under it come from inbox writers (``rel``), so none is joined onto a path
    string for the kernel to resolve: each folder on the way is opened, or made, by its one
    name from the descriptor of the one above (as CPython's ``shutil._rmtree_safe_fd`` walks a
    tree a stranger can change). A symlink or a file on the way makes that destination
    unusable, never a way out. Nothing is cached but the top descriptor, so nothing cached can
    go stale: opening each folder on the way is the check (an open and a close a level; a flat
    inbox walks none)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.fd = open_folder(self.path)

    def close(self) -> None:
        os.close(self.fd)

    def __enter__(self) -> Folder:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def place(self, src: Path, rel: str, claim_id: str, *, reserve: int = 0) -> str:
        """``place`` into this folder; returns the destination relative to it."""
        problems = []
        for dest in relative_destinations(rel, claim_id, reserve=reserve):
            try:
                if self._put(src, dest, claim_id):
                    return dest
                problems.append(f"{_name_of(dest)}: taken")
            except OSError as exc:
                if is_disk_trouble(exc) or isinstance(exc, TooBig):
                    raise
                problems.append(f"{_name_of(dest)}: {exc.strerror or exc}")
        if not os.path.lexists(src):
            raise FileNotFoundError(errno.ENOENT, f"{src} is gone")
        if self._reopened():
            return self.place(src, rel, claim_id, reserve=reserve)
        raise OSError(errno.EEXIST, f"cannot place {rel} in {self.path} ({'; '.join(problems)})")

    def write_atomic(self, dest: str, data: str | bytes) -> None:
        """``write_atomic_at`` the folder-relative path ``dest``, its folders made as for ``place``."""
        *parents, name = checked_parts(dest)
        with self._parent(parents) as folder:
            write_atomic_at(folder, name, data)

    def _put(self, src: Path, dest: str, claim_id: str) -> bool:
        *parents, name = checked_parts(dest)
        tmp = f".{claim_id}.part"  # checked where used: a copy, seldom
        if not parents:  # a flat inbox: no folder to walk
            return put_at(src, self.fd, name, tmp)
        with self._parent(parents) as folder:
            return put_at(src, folder, name, tmp)

    @contextmanager
    def _parent(self, names: list[str]) -> Iterator[int]:
        """The folder ``names`` lead to under this one, each made where missing and opened by
        its name alone: ENOTDIR or ELOOP where one is a file or a symlink."""
        fd = make_folders(self.fd, names, 0o777)  # as mkdir makes them: the umask decides
        try:
            yield fd
        finally:
            os.close(fd)

    def _reopened(self) -> bool:
        """Open the folder again by its path if it was removed under us (every destination
        then fails): made again, as before it was held open."""
        if os.fstat(self.fd).st_nlink > 0:
            return False
        fd = open_folder(self.path)
        os.close(self.fd)
        self.fd = fd
        return True


def _name_of(dest: str) -> str:
    return dest.rpartition("/")[2]


def place(src: Path, folder: Folder | Path, rel: str, claim_id: str, *, reserve: int = 0) -> Path:
    """Put ``src`` into ``folder`` at the first of its ``destinations`` that takes it, without
    ever overwriting, and return where. Idempotent: a replay finds what it placed before.

    ``src`` stays where it is unless only a rename could move it (a hard link refused to a file
    of another owner, with ``fs.protected_hardlinks``, and the file unreadable to copy). One
    file's trouble (a name too long, a file or a symlink where a folder should be) tries the
    next destination; disk trouble (``DISK_TROUBLE``) is raised for the caller to wait out.
    ``folder`` given as a path is opened for this call (made if missing)."""
    if isinstance(folder, Folder):
        return folder.path / folder.place(src, rel, claim_id, reserve=reserve)
    with Folder(folder) as opened:
        return place(src, opened, rel, claim_id, reserve=reserve)


def move_unique(src: Path, folder: Folder | Path, rel: str, claim_id: str) -> Path:
    """Move ``src`` into ``folder`` (see ``place``); idempotent after a crash."""
    dest = place(src, folder, rel, claim_id)
    unlink_quietly(src)  # gone already if place had to rename it
    return dest
