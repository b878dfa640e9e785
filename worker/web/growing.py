"""A file that grows by whole lines (our JSONL files), read by what was appended since the last
look: the web page's state is kept up to date at the cost of the new bytes, never the file's.

The file is ours but a person may have edited it: one that is replaced (another inode), shrinks,
or no longer has a line end where the last look stopped was rewritten, and the next look starts
over (``reset``), from ``start_tail`` bytes before the end. What is read at once is capped
(``read_bytes``: the rest comes at the next look), and so is a line (``max_line``: a longer one
is passed over, never held), so no file costs more memory than that.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

# Read at most this much at one look: a backlog is taken in steps, each allocation bounded.
READ_BYTES = 8 * 2**20


@dataclass
class Appended:
    """What a look found: whole lines appended since the last one (each ending in a newline),
    and whether the file followed so far is gone or was rewritten (the lines then start over,
    from the tail of what is there now)."""

    lines: list[bytes]
    reset: bool = False
    more: bool = False  # more is there than was read: look again soon


class GrowingFile:
    def __init__(self, path: Path, *, start_tail: int | None, max_line: int,
                 read_bytes: int = READ_BYTES) -> None:
        """``start_tail``: read a new file from this many bytes before its end (None: from its
        start)."""
        self.path = Path(path)
        self.start_tail = start_tail
        self.max_line = max_line
        self.read_bytes = max(read_bytes, max_line + 1)
        self.identity: tuple[int, int] | None = None  # (st_dev, st_ino) of the file followed
        self.offset = 0  # where the next look reads from: a line's start, unless skipping
        self.skipping = False  # in a line not to be read (cut at the tail's start, or too long)
        self.bytes_read = 0  # in all, for the tests that count work

    def appended(self) -> Appended:
        """The whole lines appended since the last call (none if the file is missing)."""
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
        except OSError:  # missing, a symlink, unreadable: nothing to follow now
            reset = self.identity is not None
            self.identity = None
            return Appended([], reset)
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):  # a folder or a device in its place: nothing to follow
            os.close(fd)
            reset = self.identity is not None
            self.identity = None
            return Appended([], reset)
        with open(fd, "rb") as fh:
            followed = self.identity is not None
            reset = self._rewritten(fh, info)
            if reset:
                self._start(info)
            return self._read(fh, info.st_size, reset and followed)

    def _rewritten(self, fh, info: os.stat_result) -> bool:
        if self.identity != (info.st_dev, info.st_ino) or info.st_size < self.offset:
            return True
        if self.offset == 0 or self.skipping or info.st_size == self.offset:
            return False
        fh.seek(self.offset - 1)
        self.bytes_read += 1
        return fh.read(1) != b"\n"  # the line the last look ended with is no longer there

    def _start(self, info: os.stat_result) -> None:
        self.identity = (info.st_dev, info.st_ino)
        start = 0 if self.start_tail is None else max(0, info.st_size - self.start_tail)
        self.offset, self.skipping = start, start > 0  # the first line from a tail is cut

    def _read(self, fh, size: int, reset: bool) -> Appended:
        if size == self.offset:
            return Appended([], reset)
        fh.seek(self.offset)
        waiting = size - self.offset
        data = fh.read(min(waiting, self.read_bytes))
        self.bytes_read += len(data)
        lines = data.split(b"\n")
        tail = lines.pop()  # after the last newline: a line still being written, read again next time
        consumed = len(data) - len(tail)
        if self.skipping and not lines:  # still in the line passed over
            consumed = len(tail)
        elif self.skipping:
            lines.pop(0)
            self.skipping = False
        elif not lines and len(tail) > self.max_line:  # no end in sight: pass it over
            consumed, self.skipping = len(tail), True
        self.offset += consumed
        kept = [line + b"\n" for line in lines if 0 < len(line) < self.max_line]
        return Appended(kept, reset, more=len(data) < waiting)
