"""File operations that never lose or overwrite: atomic, synced writes, and links into an
archive folder that pick another name rather than replace what is there."""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path


def write_atomic(path: Path, data: str | bytes) -> None:
    """Write ``path`` whole or not at all: a synced temporary file in the same folder, renamed
    over it, then the folder synced so the rename survives a power cut."""
    path = Path(path)
    raw = data.encode("utf-8") if isinstance(data, str) else data
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name[:200]}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(raw)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    _sync_folder(path.parent)


def _sync_folder(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _same_inode(a: Path, b: Path) -> bool:
    try:
        sa, sb = os.lstat(a), os.lstat(b)
    except FileNotFoundError:
        return False
    return (sa.st_dev, sa.st_ino) == (sb.st_dev, sb.st_ino)


def destinations(folder: Path, rel: str, claim_id: str) -> Iterator[Path]:
    """The plain destination, then the one used if the plain one is taken (made only then:
    this runs once per archived file)."""
    plain = folder / rel
    yield plain
    suffix = "".join(plain.suffixes[-1:])
    stem = plain.name[: len(plain.name) - len(suffix)] if suffix else plain.name
    yield plain.with_name(f"{stem}.{claim_id}{suffix}")


_made_folders: set[str] = set()


def _make_parent(path: Path) -> None:
    """mkdir -p the parent once per process: a system call for every archived file adds up.
    Keyed by string, which is cheaper to make and hash than the parent Path."""
    parent = os.path.dirname(path)
    if parent not in _made_folders:
        os.makedirs(parent, exist_ok=True)
        _made_folders.add(parent)


def place(src: Path, folder: Path, rel: str, claim_id: str) -> Path:
    """Link ``src`` into ``folder/rel`` without overwriting (``x.<id>.png`` if taken) and
    return where it is; ``src`` stays. Idempotent: a replay finds the link it made before."""
    tried = []
    for dest in destinations(folder, rel, claim_id):
        tried.append(dest)
        _make_parent(dest)  # once per folder: both destinations share it
        try:
            os.link(src, dest, follow_symlinks=False)
            return dest
        except FileExistsError:
            if _same_inode(src, dest):  # a replay: the previous attempt got this far
                return dest
        except FileNotFoundError:  # the folder was removed under us: make it again
            _made_folders.discard(os.path.dirname(dest))
            _make_parent(dest)
            os.link(src, dest, follow_symlinks=False)
            return dest
        except OSError as exc:
            if exc.errno != errno.EXDEV:  # only "the outbox is on another file system" is ok
                raise
            if not dest.exists():
                shutil.copy2(src, dest, follow_symlinks=False)
                return dest
    raise FileExistsError(f"both {tried[0]} and {tried[1]} exist")


def move_unique(src: Path, folder: Path, rel: str, claim_id: str) -> Path:
    """Move ``src`` to ``folder/rel`` without overwriting; idempotent after a crash."""
    dest = place(src, folder, rel, claim_id)
    os.unlink(src)
    return dest
