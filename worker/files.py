"""File operations that never lose or overwrite: atomic, synced writes, and links into an
archive folder that pick another name rather than replace what is there. Paths an inbox writer
chose are made under an open ``Folder``, one name at a time, never through a symlink."""

from __future__ import annotations

import errno
import os
import shutil
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from worker.safe_paths import FOLDER_FLAGS, checked_parts, make_folders, parts_of

# The process's umask, read once (reading it means setting it): files made by mkstemp (0600)
# get the permissions a plain open() would give, so a card or a report stays readable to others.
_UMASK = os.umask(0o022)
os.umask(_UMASK)


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
            return name, _create(folder, name, 0o666)
        except FileExistsError:
            continue
    raise FileExistsError(errno.EEXIST, f"no free temporary name starting {prefix}")


def _create(folder: int, name: str, mode: int) -> BinaryIO:
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


NAME_MAX = 255  # bytes in one file name on Linux file systems
# Errors that say the disk or the file system is in trouble, not one file: wait and retry.
DISK_TROUBLE = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EROFS})
# A suffix longer than this is no file type; the last-resort name drops it.
MAX_SUFFIX = 16
# A file made by one name in a folder already open: only a new one, never through a symlink.
_NEW_FILE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


class TooBig(OSError):
    """A file larger than the whole file system it was to be copied to: no wait makes room,
    so it is that file's trouble, not the disk's."""


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
            return _put_at(src, self.fd, name, tmp)
        with self._parent(parents) as folder:
            return _put_at(src, folder, name, tmp)

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


def _checked(name: str) -> str:
    """A plain name of one entry (OSError if not)."""
    if parts_of(name) != [name]:
        raise OSError(errno.EINVAL, f"{name!r} is not a plain name")
    return name


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


def _put_at(src: Path, folder: int, name: str, tmp: str) -> bool:
    """Link (or copy) ``src`` to ``name`` in ``folder``; False if that holds something else."""
    try:
        os.link(src, name, dst_dir_fd=folder, follow_symlinks=False)
        return True
    except FileExistsError:
        return _same_inode(src, folder, name) or _same_copy(src, folder, name)
    except OSError as exc:
        if exc.errno == errno.EXDEV:  # the outbox is on another file system
            return copy_atomic(src, folder, name, _checked(tmp))
        if exc.errno == errno.EPERM:  # protected_hardlinks: another user's file
            return _copy_or_rename(src, folder, name, _checked(tmp))
        raise


def _copy_or_rename(src: Path, folder: int, name: str, tmp: str) -> bool:
    try:
        return copy_atomic(src, folder, name, tmp)
    except PermissionError:  # cannot even read it: move it whole, if nothing is there
        if _lexists(folder, name):
            return False
        os.rename(src, name, dst_dir_fd=folder)
        return True


def copy_atomic(src: Path, folder: int, name: str, tmp: str) -> bool:
    """Copy to ``tmp`` beside ``name`` in ``folder``, fsync, link into place (never
    overwriting), fsync the folder: ``name`` is whole or absent. A stale ``tmp`` from a crash
    is replaced. A FIFO or device has no content to keep: nothing is made. False if ``name``
    holds something else."""
    info = os.lstat(src)
    if stat.S_ISLNK(info.st_mode):
        unlink_quietly(tmp, dir_fd=folder)
        os.symlink(os.readlink(src), tmp, dir_fd=folder)
    elif stat.S_ISREG(info.st_mode):
        _copy_synced(src, folder, tmp, info)
    else:
        return True
    try:
        os.link(tmp, name, src_dir_fd=folder, dst_dir_fd=folder, follow_symlinks=False)
    except FileExistsError:
        if not _same_copy(src, folder, name):
            unlink_quietly(tmp, dir_fd=folder)
            return False
    os.unlink(tmp, dir_fd=folder)
    os.fsync(folder)
    return True


def _copy_synced(src: Path, folder: int, tmp: str, info: os.stat_result) -> None:
    """``src``'s bytes, mode and times in a new ``tmp``, synced."""
    try:
        with open(src, "rb") as reader:
            unlink_quietly(tmp, dir_fd=folder)
            with _create(folder, tmp, 0o600) as writer:
                shutil.copyfileobj(reader, writer, 1 << 20)
                writer.flush()
                os.fchmod(writer.fileno(), stat.S_IMODE(info.st_mode))
                os.utime(writer.fileno(), ns=(info.st_atime_ns, info.st_mtime_ns))
                os.fsync(writer.fileno())
    except OSError as exc:
        if exc.errno not in (errno.ENOSPC, errno.EDQUOT) or info.st_size <= _capacity(folder):
            raise
        unlink_quietly(tmp, dir_fd=folder)
        raise TooBig(errno.EFBIG, f"{info.st_size:,} bytes, more than its whole file system") from exc


def _capacity(folder: int) -> int:
    info = os.statvfs(folder)
    return info.f_blocks * info.f_frsize


def unlink_quietly(path: Path | str, *, dir_fd: int | None = None) -> None:
    try:
        os.unlink(path, dir_fd=dir_fd)
    except FileNotFoundError:
        pass


def _lexists(folder: int, name: str) -> bool:
    try:
        os.stat(name, dir_fd=folder, follow_symlinks=False)
    except FileNotFoundError:
        return False
    return True


def _same_inode(src: Path, folder: int, name: str) -> bool:
    try:
        a, b = os.lstat(src), os.stat(name, dir_fd=folder, follow_symlinks=False)
    except FileNotFoundError:
        return False
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def _same_copy(src: Path, folder: int, name: str) -> bool:
    """``name`` is a whole copy of ``src`` (a replay finds its own earlier copy): the same
    bytes and, as the copy left it, the same modification time."""
    try:
        a, b = os.lstat(src), os.stat(name, dir_fd=folder, follow_symlinks=False)
    except FileNotFoundError:
        return False
    if stat.S_ISLNK(a.st_mode) and stat.S_ISLNK(b.st_mode):
        return os.readlink(src) == os.readlink(name, dir_fd=folder)
    if not (stat.S_ISREG(a.st_mode) and stat.S_ISREG(b.st_mode)):
        return False
    same_stat = (a.st_size, a.st_mtime_ns) == (b.st_size, b.st_mtime_ns)
    return same_stat and _same_bytes(src, folder, name)


def _same_bytes(src: Path, folder: int, name: str) -> bool:
    with open(src, "rb") as a, open(os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC,
                                              dir_fd=folder), "rb") as b:
        while True:
            chunk = a.read(1 << 20)
            if chunk != b.read(1 << 20):
                return False
            if not chunk:
                return True


def move_unique(src: Path, folder: Folder | Path, rel: str, claim_id: str) -> Path:
    """Move ``src`` into ``folder`` (see ``place``); idempotent after a crash."""
    dest = place(src, folder, rel, claim_id)
    unlink_quietly(src)  # gone already if place had to rename it
    return dest
