"""The inbox folder's identity (device and inode): the inbox may be deleted, renamed, unmounted
or replaced under the daemon, which must notice to wait for it, or to take it up anew."""

from __future__ import annotations

import os
import stat
from pathlib import Path


class InboxFolder:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.seen = identity(path)  # None: no folder there at the last look

    @property
    def present(self) -> bool:
        return self.seen is not None

    def changed(self) -> bool:
        """Whether the folder at the path is another than at the last look: gone, back, or
        replaced."""
        now = identity(self.path)
        changed, self.seen = now != self.seen, now
        return changed


def identity(path: Path) -> tuple[int, int] | None:
    """The folder's (device, inode); None if there is none there."""
    try:
        info = os.stat(path)
    except OSError:
        return None
    return (info.st_dev, info.st_ino) if stat.S_ISDIR(info.st_mode) else None
