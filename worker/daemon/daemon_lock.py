"""A daemon's lock file, ``.work/<id>.lock``: held with ``flock`` for the daemon's whole life.

The kernel drops a ``flock`` when its process dies, even by kill -9: whoever can take the lock
knows its owner is gone. While it lives, the file says what the daemon serves, for
``worker status``.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import stat
from pathlib import Path

# A lock file is opened without following a symlink, and without blocking on a FIFO.
LOCK_FLAGS = os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
# A live daemon's lock file holds one JSON object saying what it serves (``WorkFolder.announce``),
# for ``worker status``: these fields, of these types. A daemon from before this leaves its
# lock file empty.
ABOUT_FIELDS = {"pid": int, "model": str, "model_version": str, "since": str}
ABOUT_MAX_BYTES = 4096


def take_lock(path: Path | str, *, shared: bool = False, dir_fd: int | None = None) -> int | None:
    """Try a daemon's lock file without waiting: our fd holding it if we got it (the daemon is
    dead), None if a live daemon holds it. FileNotFoundError if there is no such file; another
    OSError if it is not a plain file (a symlink, a FIFO)."""
    fd = os.open(path, os.O_RDONLY | LOCK_FLAGS, dir_fd=dir_fd)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, f"{path} is not a lock file")
        fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    except BaseException:
        os.close(fd)
        raise
    return fd


def read_about(path: Path | str) -> dict:
    """What a daemon said of itself in its lock file (``WorkFolder.announce``): the fields of
    ``ABOUT_FIELDS`` it holds, each of its type; {} for an empty lock file (a daemon from
    before) or one that is no such object. Read without following a symlink, and so far only."""
    fd = os.open(path, os.O_RDONLY | LOCK_FLAGS)
    try:
        data = os.read(fd, ABOUT_MAX_BYTES)
    finally:
        os.close(fd)
    try:
        about = json.loads(data)
    except ValueError:
        return {}
    if not isinstance(about, dict):
        return {}
    # the exact type: JSON's true is no pid
    return {key: about[key] for key, kind in ABOUT_FIELDS.items() if type(about.get(key)) is kind}
