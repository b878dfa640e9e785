"""The error records in ``outbox/failed/``, each read once: what the web page shows of them (the
newest, today's count by kind) comes from this index, not from reading every record again.

A look lists the folder's names (no record is opened but a new one); a name gone is dropped. A
record is read no further than ``RECORD_BYTES`` (ours are a few hundred bytes), through no
symlink, and checked by ``outbox_lines`` like every reader's.
"""

from __future__ import annotations

import heapq
import os
import stat
import sys
from collections import Counter
from pathlib import Path

from worker.outbox.lines import error_record_from
from worker.outbox.records import ERROR_SUFFIX

# The most of an error record read: a path as long as the kernel takes, escaped, and a message.
RECORD_BYTES = 64 * 1024


class FailedIndex:
    def __init__(self, failed: Path) -> None:
        self.failed = Path(failed)
        # relative path -> (mtime_ns, kind, day), or None for no record: small, as a folder may
        # hold a great many; what the page shows of a record is kept for the newest only.
        self.known: dict[str, tuple[int, str, str] | None] = {}
        self.by_day: Counter[tuple[str, str]] = Counter()  # (day, kind) -> records
        self.newest: dict[str, dict] = {}  # relative path -> what the page shows, newest first
        self.records_read = 0

    @property
    def shown(self) -> list[dict]:
        return list(self.newest.values())

    def look(self, newest: int) -> bool:
        """Take in new records and drop those gone, keeping the ``newest``; whether anything
        changed."""
        names = set(self._names())
        gone = self.known.keys() - names
        for name in gone:
            self._count(self.known.pop(name), -1)
        read = {}
        for name in names - self.known.keys():
            entry, read[name] = self._read(name)
            self.known[name] = entry
            self._count(entry, 1)
        if gone or read:
            self._keep_newest(newest, read)
        return bool(gone or read)

    def _keep_newest(self, newest: int, read: dict[str, dict | None]) -> None:
        found = heapq.nlargest(newest, ((entry[0], name) for name, entry in self.known.items() if entry))
        kept = {}
        for _, name in found:  # an older record come up among the newest is read again
            shown = self.newest.get(name) or read.get(name) or self._read(name)[1]
            if shown is not None:
                kept[name] = shown
        self.newest = kept

    def on_day(self, day: str) -> dict[str, int]:
        """How many records of each kind have a time on ``day`` (``YYYY-MM-DD``)."""
        return {kind: n for (on, kind), n in self.by_day.items() if on == day and n}

    def _count(self, entry: tuple | None, change: int) -> None:
        if entry is not None:
            self.by_day[(entry[2], entry[1])] += change

    def _names(self):
        for root, folders, files in os.walk(self.failed):  # os.walk follows no symlinked folder
            base = os.path.relpath(root, self.failed)
            for name in files:
                if name.endswith(ERROR_SUFFIX):
                    yield name if base == "." else f"{base}/{name}"
            folders.sort()

    def _read(self, name: str) -> tuple[tuple[int, str, str] | None, dict | None]:
        """(mtime, kind, day) of a record, and what the page shows of it; Nones for no record."""
        self.records_read += 1
        try:
            fd = os.open(self.failed / name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
        except OSError:
            return None, None
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            os.close(fd)
            return None, None
        with open(fd, "rb") as fh:
            record = error_record_from(fh.read(RECORD_BYTES))
        if record is None:
            return None, None
        shown = {key: record[key] for key in ("file", "kind", "message")}
        return (info.st_mtime_ns, sys.intern(record["kind"]), sys.intern(record.get("time", "")[:10])), shown
