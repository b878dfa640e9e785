"""File operations that never lose or overwrite: atomic, synced writes, and links into an
archive folder that pick another name rather than replace what is there."""

from __future__ import annotations

import errno
import filecmp
import os
import shutil
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

# The process's umask, read once (reading it means setting it): files made by mkstemp (0600)
# get the permissions a plain open() would give, so a card or a report stays readable to others.
_UMASK = os.umask(0o022)
os.umask(_UMASK)


def plain_mode(mode: int) -> int:
    """``mode`` less the umask: what a plain open() or mkdir() would give."""
    return mode & ~_UMASK


def write_atomic(path: Path, data: str | bytes) -> None:
    """Write ``path`` whole or not at all: a synced temporary file in the same folder, renamed
    over it, then the folder synced so the rename survives a power cut."""
    path = Path(path)
    raw = data.encode("utf-8") if isinstance(data, str) else data
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name[:200]}.", suffix=".tmp")
    try:
        os.fchmod(fd, plain_mode(0o666))
        with os.fdopen(fd, "wb") as fh:
            fh.write(raw)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    sync_folder(path.parent)


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


class TooBig(OSError):
    """A file larger than the whole file system it was to be copied to: no wait makes room,
    so it is that file's trouble, not the disk's."""


def is_disk_trouble(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in DISK_TROUBLE


def destinations(folder: Path, rel: str, claim_id: str, *, reserve: int = 0) -> Iterator[Path]:
    """Where an input may go, in order: its own path; ``x.<id>.png`` beside it (the plain name is
    taken); ``<id>.png`` at the top of ``folder`` (a name that always fits, under no subfolder
    that could be a file). A name that would not fit NAME_MAX with ``reserve`` bytes to spare
    (for ``.error.json``) is skipped. Made lazily: the first one almost always serves."""
    plain = folder / rel
    if _fits(plain.name, reserve):
        yield plain
    suffix = "".join(plain.suffixes[-1:])
    stem = plain.name[: len(plain.name) - len(suffix)] if suffix else plain.name
    beside = plain.with_name(f"{stem}.{claim_id}{suffix}")
    if _fits(beside.name, reserve):
        yield beside
    yield folder / f"{claim_id}{suffix if len(os.fsencode(suffix)) <= MAX_SUFFIX else ''}"


def _fits(name: str, reserve: int) -> bool:
    return len(os.fsencode(name)) + reserve <= NAME_MAX


_made_folders: set[str] = set()


def _make_parent(path: Path) -> None:
    """mkdir -p the parent once per process: a system call for every archived file adds up.
    Keyed by string, which is cheaper to make and hash than the parent Path."""
    parent = os.path.dirname(path)
    if parent not in _made_folders:
        os.makedirs(parent, exist_ok=True)
        _made_folders.add(parent)


def place(src: Path, folder: Path, rel: str, claim_id: str, *, reserve: int = 0) -> Path:
    """Put ``src`` into ``folder`` at the first of its ``destinations`` that takes it, without
    ever overwriting, and return where. Idempotent: a replay finds what it placed before.

    ``src`` stays where it is unless only a rename could move it (a hard link refused to a file
    of another owner, with ``fs.protected_hardlinks``, and the file unreadable to copy). One
    file's trouble (a name too long, a file where a folder should be) tries the next
    destination; disk trouble (``DISK_TROUBLE``) is raised for the caller to wait out."""
    problems = []
    for dest in destinations(folder, rel, claim_id, reserve=reserve):
        try:
            if _put(src, dest, claim_id):
                return dest
            problems.append(f"{dest.name}: taken")
        except OSError as exc:
            if is_disk_trouble(exc) or isinstance(exc, TooBig):
                raise
            problems.append(f"{dest.name}: {exc.strerror or exc}")
    if not os.path.lexists(src):
        raise FileNotFoundError(errno.ENOENT, f"{src} is gone")
    raise OSError(errno.EEXIST, f"cannot place {rel} in {folder} ({'; '.join(problems)})")


def _put(src: Path, dest: Path, claim_id: str) -> bool:
    """Link (or copy) ``src`` to ``dest``; False if ``dest`` holds something else."""
    try:
        _make_parent(dest)
        os.link(src, dest, follow_symlinks=False)
        return True
    except FileExistsError:
        return _same_inode(src, dest) or _same_copy(src, dest)
    except FileNotFoundError:  # the folder was removed under us: make it again
        _made_folders.discard(os.path.dirname(dest))
        return _put_after_mkdir(src, dest)
    except OSError as exc:
        if exc.errno == errno.EXDEV:  # the outbox is on another file system
            return copy_atomic(src, dest, dest.with_name(f".{claim_id}.part"))
        if exc.errno == errno.EPERM:  # protected_hardlinks: another user's file
            return _copy_or_rename(src, dest, claim_id)
        raise


def _put_after_mkdir(src: Path, dest: Path) -> bool:
    _make_parent(dest)
    os.link(src, dest, follow_symlinks=False)
    return True


def _copy_or_rename(src: Path, dest: Path, claim_id: str) -> bool:
    try:
        return copy_atomic(src, dest, dest.with_name(f".{claim_id}.part"))
    except PermissionError:  # cannot even read it: move it whole, if nothing is there
        if os.path.lexists(dest):
            return False
        os.rename(src, dest)
        return True


def copy_atomic(src: Path, dest: Path, tmp: Path) -> bool:
    """Copy to ``tmp`` beside ``dest``, fsync, link into place (never overwriting), fsync the
    folder: ``dest`` is whole or absent. A stale ``tmp`` from a crash is overwritten. A FIFO or
    device has no content to keep: nothing is made. False if ``dest`` holds something else."""
    info = os.lstat(src)
    if stat.S_ISLNK(info.st_mode):
        unlink_quietly(tmp)
        os.symlink(os.readlink(src), tmp)
    elif stat.S_ISREG(info.st_mode):
        _copy_synced(src, tmp, info.st_size)
    else:
        return True
    try:
        os.link(tmp, dest, follow_symlinks=False)
    except FileExistsError:
        if not _same_copy(src, dest):
            unlink_quietly(tmp)
            return False
    os.unlink(tmp)
    sync_folder(dest.parent)
    return True


def _copy_synced(src: Path, tmp: Path, size: int) -> None:
    try:
        with open(src, "rb") as reader, open(tmp, "wb") as writer:
            shutil.copyfileobj(reader, writer, 1 << 20)
            writer.flush()
            os.fsync(writer.fileno())
    except OSError as exc:
        if exc.errno not in (errno.ENOSPC, errno.EDQUOT) or size <= _capacity(tmp.parent):
            raise
        unlink_quietly(tmp)
        raise TooBig(errno.EFBIG, f"{size:,} bytes, more than {tmp.parent}'s whole file system") from exc
    shutil.copystat(src, tmp)


def _capacity(folder: Path) -> int:
    info = os.statvfs(folder)
    return info.f_blocks * info.f_frsize


def unlink_quietly(path: Path) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _same_inode(a: Path, b: Path) -> bool:
    try:
        sa, sb = os.lstat(a), os.lstat(b)
    except FileNotFoundError:
        return False
    return (sa.st_dev, sa.st_ino) == (sb.st_dev, sb.st_ino)


def _same_copy(src: Path, dest: Path) -> bool:
    """``dest`` is a whole copy of ``src`` (a replay finds its own earlier copy): the same
    bytes and, as ``copystat`` left it, the same modification time."""
    try:
        a, b = os.lstat(src), os.lstat(dest)
    except FileNotFoundError:
        return False
    if stat.S_ISLNK(a.st_mode) and stat.S_ISLNK(b.st_mode):
        return os.readlink(src) == os.readlink(dest)
    if not (stat.S_ISREG(a.st_mode) and stat.S_ISREG(b.st_mode)):
        return False
    same_stat = (a.st_size, a.st_mtime_ns) == (b.st_size, b.st_mtime_ns)
    return same_stat and filecmp.cmp(src, dest, shallow=False)


def move_unique(src: Path, folder: Path, rel: str, claim_id: str) -> Path:
    """Move ``src`` into ``folder`` (see ``place``); idempotent after a crash."""
    dest = place(src, folder, rel, claim_id)
    unlink_quietly(src)  # gone already if place had to rename it
    return dest
