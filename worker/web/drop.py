"""Uploads into the inbox: each under a name of its own, arriving whole, followed by its bytes.

A name of its own (``<name>-<tag>.<ext>``, the tag random) is never a name an earlier file had,
and never one the daemon ignores. The bytes are written under a hidden temporary name in the
inbox (which the daemon ignores), synced, then renamed into place without replacing anything:
inotify reports the rename as a file moved in whole, which the daemon claims at once. (A hard
link made the same file appear with only a creation event, no close, so the daemon waited out
its quiet time for a file still open for writing.)

What the daemon writes of a name is this upload's only if it is of these bytes: ``sha256`` is
returned with the name, and a record is taken as the upload's by both (``outbox_view``).
"""

from __future__ import annotations

import ctypes
import errno
import hashlib
import os
import re
import secrets
from functools import cache
from pathlib import Path

from fastapi import HTTPException

from worker.daemon.watch import IGNORED_PREFIXES, IGNORED_SUFFIXES, is_ignored

# Characters never kept in a name given to the inbox: path separators and control characters.
UNSAFE = re.compile(r"[/\\\x00-\x1f\x7f]")
# A stored name's tag: random, so that no name is given twice (a row of an earlier upload of the
# same name is never taken for this one's).
TAG_BYTES = 6
STORED_NAME = re.compile(rf"(?s).+-[0-9a-f]{{{2 * TAG_BYTES}}}(\.[^.]*)?")
TAG_ATTEMPTS = 5
# renameat2's flag: fail with EEXIST rather than replace what the new name holds.
RENAME_NOREPLACE = 1


def plain_name(filename: str | None) -> str:
    """Only the last part of what a browser calls the file, never a path: ``../../etc/x.png``
    is ``x.png``; a name the daemon would ignore by its start (hidden, or Office's ``~$``) loses
    that start."""
    name = UNSAFE.sub("_", (filename or "").replace("\\", "/").rsplit("/", 1)[-1]).strip()
    while name.startswith(IGNORED_PREFIXES):
        name = name.lstrip(".").removeprefix("~$").strip()
    name = name.encode("utf-8")[:200].decode("utf-8", "ignore")
    return name or "upload"


def stored_name(plain: str) -> str:
    """``plain`` with a fresh tag before its extension, and without the suffixes that make the
    daemon ignore a file (``.part``, ``.tmp``, ``~``...: a browser's name for a download, not
    what the file is). Never a name the daemon ignores: 422 says so if it would be."""
    name = plain
    while (ignored := next((s for s in IGNORED_SUFFIXES if name.lower().endswith(s)), None)) is not None:
        name = name[: -len(ignored)]
    stem, suffix = os.path.splitext(name or "upload")
    stored = f"{stem}-{secrets.token_hex(TAG_BYTES)}{suffix}"
    if is_ignored(stored):
        raise HTTPException(422, f"{plain!r} is a name the daemon ignores, and no other could be made of it")
    return stored


def is_stored_name(name: str) -> bool:
    """Whether ``name`` is of the form ``stored_name`` gives (a plain name with a tag)."""
    return plain_name(name) == name and STORED_NAME.fullmatch(name) is not None and not is_ignored(name)


def drop(inbox: Path, name: str, data: bytes) -> dict:
    """Put ``data`` into the inbox whole under a stored name made of ``name``; returns that
    name (``name``) and the bytes' ``sha256``."""
    if not data:
        raise HTTPException(422, "the file is empty")
    folder = os.open(inbox, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        tmp = f".upload-{secrets.token_hex(8)}.tmp"
        _write_synced(folder, tmp, data)
        try:
            stored = _arrive(folder, tmp, name)
        except BaseException:
            _unlink_quietly(folder, tmp)
            raise
        os.fsync(folder)  # the rename itself survives a power cut: the 201 said it is there
    finally:
        os.close(folder)
    return {"name": stored, "sha256": hashlib.sha256(data).hexdigest()}


def _write_synced(folder: int, name: str, data: bytes) -> None:
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(name, flags, 0o644, dir_fd=folder)
    with open(fd, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def _arrive(folder: int, tmp: str, name: str) -> str:
    """Rename ``tmp`` to a free stored name of ``name``; 409 if none is free."""
    for _ in range(TAG_ATTEMPTS):
        candidate = stored_name(name)
        try:
            rename_new(folder, tmp, candidate)
            return candidate
        except FileExistsError:
            continue
        except OSError as exc:
            raise HTTPException(503, f"cannot write into the inbox: {exc.strerror}") from None
    raise HTTPException(409, f"no free name for {name} in the inbox")


def rename_new(folder: int, src: str, dst: str) -> None:
    """Rename ``src`` to ``dst`` in ``folder``, never replacing a file at ``dst``
    (FileExistsError). Where the file system has no such rename (some network shares), ``dst``
    is looked at first: only a writer who guessed a fresh random tag could take it in between."""
    try:
        _renameat2(folder, src, folder, dst, RENAME_NOREPLACE)
    except OSError as exc:
        if exc.errno not in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
            raise
        try:
            os.stat(dst, dir_fd=folder, follow_symlinks=False)
        except FileNotFoundError:
            os.rename(src, dst, src_dir_fd=folder, dst_dir_fd=folder)
            return
        raise FileExistsError(errno.EEXIST, "File exists", dst) from None


def _renameat2(src_folder: int, src: str, dst_folder: int, dst: str, flags: int) -> None:
    """The renameat2 system call (Linux 3.15, glibc 2.28), which Python's os does not offer."""
    call = getattr(_libc(), "renameat2", None)
    if call is None:
        raise OSError(errno.ENOSYS, "renameat2 is not available")
    if call(src_folder, os.fsencode(src), dst_folder, os.fsencode(dst), flags) != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code), dst)


@cache
def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def _unlink_quietly(folder: int, name: str) -> None:
    try:
        os.unlink(name, dir_fd=folder)
    except FileNotFoundError:
        pass
