"""One file put at one name in an open folder, never overwriting: a hard link, or a synced copy
where no link can be made (another file system; another user's file under
``fs.protected_hardlinks``), or as a last resort the file renamed whole. What is at the name
already counts as done when it is that file, or a whole copy of it (a replay after a crash)."""

from __future__ import annotations

import errno
import os
import shutil
import stat
from pathlib import Path

from worker.files import create_at, unlink_quietly
from worker.safe_paths import exists_at, parts_of


class TooBig(OSError):
    """A file larger than the whole file system it was to be copied to: no wait makes room,
    so it is that file's trouble, not the disk's."""


def put_at(src: Path, folder: int, name: str, tmp: str) -> bool:
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
        if exists_at(folder, name):
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
            with create_at(folder, tmp, 0o600) as writer:
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


def _checked(name: str) -> str:
    """A plain name of one entry (OSError if not)."""
    if parts_of(name) != [name]:
        raise OSError(errno.EINVAL, f"{name!r} is not a plain name")
    return name


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
