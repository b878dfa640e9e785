"""What in the inbox is a candidate, and when a candidate is complete enough to claim.

Small units, each tested alone; ``intake.py`` drives them:

- ``is_ignored``: junk and temporary files that are never touched (hidden, ``.part``, ``~``,
  ``Thumbs.db``, ``@eaDir``…), and those a site's own ``--ignore`` patterns name
  (``ignore_patterns``). Everything else ends as a row or an error record.
- ``StabilityTracker``: a file is ready at once when it was moved in whole, and when its writer
  closed it (or, with ``close_settle``, once it stayed closed and unchanged that long); otherwise
  once its size and mtime have not changed for ``settle`` seconds. A file that keeps changing is
  never given up on.
- ``InboxEvents``: a watchdog handler that feeds a bounded queue; on overflow it raises a flag
  so the daemon rescans instead of growing without limit.
- ``scan``: a lazy walk of the inbox (``os.scandir``), so a huge backlog is read in slices.
- ``arrivals_observer``: watchdog's inotify observer, minus departures (see its docstring).
"""

from __future__ import annotations

import errno
import fnmatch
import logging
import os
import queue
import re
import stat
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from watchdog.events import (
    FileClosedEvent,
    FileCreatedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)

from worker.safe_paths import lstat_below, open_folder, opened

log = logging.getLogger(__name__)

IGNORED_NAMES = {".ds_store", "thumbs.db", "desktop.ini"}
# Temporaries under the name of the file to come: browsers' downloads (.part, .crdownload,
# .download), WinSCP's .filepart, Resilio Sync's .!sync, editors' .swp and ~.
IGNORED_SUFFIXES = (".part", ".tmp", ".crdownload", ".partial", ".swp", "~", ".filepart", ".!sync",
                    ".download")
# Hidden files, and Office's lock files (~$report.docx).
IGNORED_PREFIXES = (".", "~$")
IGNORED_DIRS = {"@eadir", "#recycle", "$recycle.bin", "lost+found"}
# watchdog reports every open and read of ours too; only these kinds say a file changed.
EVENT_FILTER = [FileCreatedEvent, FileModifiedEvent, FileClosedEvent, FileMovedEvent]
# A file whose change time is this much later than its last write was moved in, not written.
MOVED_IN_GAP = 0.05


def ignore_patterns(globs: Iterable[str]) -> re.Pattern[str] | None:
    """The site's own ``--ignore`` globs as one pattern for ``is_ignored`` (None for none). Each
    is an ``fnmatch`` glob of a file's name (never of its folders), and like the built-in list it
    ignores case: ``*.bak`` names ``scan.BAK`` too."""
    globs = [glob.lower() for glob in globs]
    return re.compile("|".join(f"(?:{fnmatch.translate(glob)})" for glob in globs)) if globs else None


def is_ignored(rel: str, patterns: re.Pattern[str] | None = None) -> bool:
    """True for junk and temporary files (and anything in a hidden or system folder), and for
    files whose name ``patterns`` (``ignore_patterns``) matches."""
    parts = rel.split("/")
    name = parts[-1].lower()
    if any(is_ignored_folder(part) for part in parts[:-1]):
        return True
    return (
        name.startswith(IGNORED_PREFIXES)
        or name in IGNORED_NAMES
        or name.endswith(IGNORED_SUFFIXES)
        or (patterns is not None and patterns.match(name) is not None)
    )


def relative(inbox: Path, path: str) -> str | None:
    """The inbox-relative "/" path of ``path`` (as watchdog joins it onto the watched folder),
    or None if it lies outside the inbox. String work: it runs once per event."""
    prefix = f"{inbox}/"
    return path[len(prefix) :] if path.startswith(prefix) and len(path) > len(prefix) else None


# What an event says of a file (``InboxEvents``), or how else the tracker heard of it.
WRITE, CLOSED, MOVED, FOUND = "write", "closed", "moved", "found"


@dataclass
class _Seen:
    heard: str = FOUND  # the last event of the file that tells how it was written (see ``note``)
    seen: tuple[int, int, int] | None = None  # size, mtime and inode at the last look
    since: float = 0.0  # when they were last seen to change
    held: bool = False  # put back while still being written: only a close (or quiet) will do


class StabilityTracker:
    """Tracks candidate files until they are ready to claim. A file with bytes is ready:

    - moved in whole (an event said so, or, unless only a close was heard or it was put back,
      its ctime tells of a rename well after its last write): at once;
    - closed by its writer (the last event a close): at once, or with ``close_settle`` once it
      has stayed closed and unchanged (size, mtime, inode) that long after its last close, so a
      writer that closes its file between pages (scan-to-folder) and opens it again for the next
      is never cut off between two;
    - opened for writing and not closed yet: once quiet for ``settle_open``;
    - found by a scan with no event of it (the start-up scan, rescans, ``--poll``): once its
      last write is ``settle`` old, or ``close_settle`` if longer. Nothing tells whether its
      writer still has it open or will open it again for another page, so it is given at least
      the time a closed file is.

    An empty file (what a writer leaves before its first write), and one whose mtime is ahead of
    our clock, is ready only once seen unchanged for ``settle_open`` if being written, else for
    the time a found file waits, whatever else was heard of it.
    """

    def __init__(self, settle: float, settle_open: float | None = None, close_settle: float = 0.0) -> None:
        self.settle = settle
        self.close_settle = close_settle
        # A writer that may pause with its file closed may pause as long with it open.
        self.settle_open = max(settle, close_settle, settle_open if settle_open is not None else settle)
        self.settle_found = max(settle, close_settle)
        self._seen: dict[str, _Seen] = {}
        # When each file of the last pop_ready arrived whole: its ctime, the time of its last
        # write or of its rename into the inbox (the lstat that found it ready tells it).
        self.arrived: dict[str, float] = {}

    def __len__(self) -> int:
        return len(self._seen)

    def __contains__(self, rel: str) -> bool:
        return rel in self._seen

    def note(self, rel: str, kind: str = FOUND) -> None:
        """``rel`` was heard of: by an event (WRITE, CLOSED, MOVED) or found by a scan (FOUND,
        which changes nothing an event told)."""
        entry = self._seen.get(rel)
        if entry is None:
            entry = self._seen[rel] = _Seen()
        if kind == FOUND or (kind == MOVED and entry.held):
            return
        entry.heard = kind
        if kind == CLOSED and self.close_settle:
            entry.seen = None  # its time closed starts at the next look

    def hold(self, rel: str) -> None:
        """``rel`` was put back while its writer still writes: wait for its close (or for
        ``settle_open`` of quiet), whatever its own move back in looks like."""
        self._seen[rel] = _Seen(heard=WRITE, held=True)

    def pop_ready(self, inbox: Path, now: float, limit: int) -> list[str]:
        """Up to ``limit`` ready files (paths relative to the inbox); gone files are forgotten."""
        ready = []
        self.arrived.clear()
        prefix = f"{inbox}/"  # a string join: a Path per file costs more than its lstat's Python
        for rel, entry in list(self._seen.items()):
            if len(ready) >= limit:
                break
            try:
                info = _lstat(prefix, rel)
            except OSError:  # deleted before it was claimed: simply gone
                del self._seen[rel]
                continue
            if stat.S_ISDIR(info.st_mode):  # a folder took its place: a scan finds its files
                del self._seen[rel]
                continue
            if self._is_ready(entry, info, now):
                del self._seen[rel]
                ready.append(rel)
                self.arrived[rel] = info.st_ctime
        return ready

    def _is_ready(self, entry: _Seen, info: os.stat_result, now: float) -> bool:
        """``now`` is wall-clock time, comparable with mtimes."""
        if not stat.S_ISREG(info.st_mode):
            return True  # FIFOs, symlinks, devices: claimed and refused, never read
        seen = (info.st_size, info.st_mtime_ns, info.st_ino)
        changed = seen != entry.seen
        if changed:
            entry.seen, entry.since = seen, now
        heard = entry.heard
        quiet = self.settle_open if heard == WRITE else self.settle_found
        if info.st_size > 0:
            if heard == MOVED or (heard == CLOSED and not self.close_settle):
                return True
            if heard == CLOSED:  # and it must stay closed, unchanged, for close_settle
                return not changed and now - entry.since >= self.close_settle
            if moved_in(info) and not entry.held:
                return True
            if now - info.st_mtime_ns / 1e9 >= quiet:
                return True
        # Empty files, and mtimes from a skewed clock: wait until we see no change for a while.
        return not changed and now - entry.since >= quiet


def _lstat(prefix: str, rel: str) -> os.stat_result:
    """The lstat of the inbox's ``rel``: by its path, or by folder fds when the path is over
    PATH_MAX (a deep tree), so that such a file is claimed like any other."""
    try:
        return os.lstat(prefix + rel)
    except OSError as exc:
        if exc.errno != errno.ENAMETOOLONG:
            raise
        return lstat_below(prefix, rel)


def moved_in(info: os.stat_result) -> bool:
    """Renamed into place after being written: the inode changed well after its last write."""
    return info.st_ctime_ns - info.st_mtime_ns > MOVED_IN_GAP * 1e9


class InboxEvents(FileSystemEventHandler):
    """Puts (rel, kind) pairs on a bounded queue, kind one of WRITE, CLOSED, MOVED; sets
    ``overflowed`` when it is full. Ignored files (``is_ignored`` with ``patterns``) never get in."""

    def __init__(self, inbox: Path, limit: int, recursive: bool,
                 patterns: re.Pattern[str] | None = None) -> None:
        self.inbox = inbox
        self.recursive = recursive
        self.patterns = patterns
        self.queue: queue.Queue[tuple[str, str]] = queue.Queue(maxsize=limit)
        self.overflowed = False

    def dispatch(self, event: FileSystemEvent) -> None:
        if event.is_directory:
            if event.event_type == "moved":
                self.overflowed = True  # a folder moved in: let a scan find its files
            return
        path = event.dest_path if event.event_type == "moved" else event.src_path
        rel = relative(self.inbox, os.fsdecode(path))
        if rel is None or is_ignored(rel, self.patterns) or (not self.recursive and "/" in rel):
            return
        kind = {"closed": CLOSED, "moved": MOVED}.get(event.event_type, WRITE)
        try:
            self.queue.put_nowait((rel, kind))
        except queue.Full:
            self.overflowed = True


def _arrivals_emitter_class():
    from dataclasses import field

    from watchdog.observers.inotify import InotifyEmitter, InotifyWatchGroup
    from watchdog.observers.inotify_c import InotifyConstants
    from watchdog.observers.inotify_move_event_grouper import InotifyMoveEventGrouper

    class UnpairedMoves(InotifyMoveEventGrouper):
        """No IN_MOVED_FROM is ever reported, so no IN_MOVED_TO has a partner to look for."""

        def put_event(self, event):
            self._queue.put(event)

        def get_queued_moved_from_event(self, cookie):
            return None

    @dataclass
    class ArrivalsWatchGroup(InotifyWatchGroup):
        _move_event_grouper: InotifyMoveEventGrouper = field(default_factory=UnpairedMoves, init=False)

    class ArrivalsEmitter(InotifyEmitter):
        def get_event_mask_from_filter(self):
            return super().get_event_mask_from_filter() & ~InotifyConstants.IN_MOVED_FROM

        def build_and_queue_event(self, event, *, full_events=False):
            # An IN_MOVED_TO with no partner is reported as a move (from nowhere), not as a
            # creation: the file arrived whole and is ready at once.
            super().build_and_queue_event(event, full_events=True)

        def on_thread_start(self):  # InotifyEmitter's, with our watch group
            self._inotify = ArrivalsWatchGroup(
                self._inotify_fd, os.fsencode(self.watch.path),
                is_recursive=self.watch.is_recursive,
                event_mask=self.get_event_mask_from_filter(),
                follow_symlink=self.watch.follow_symlink,
            )

    return ArrivalsEmitter


def arrivals_observer():
    """An inotify observer that does not listen for files moving *out* of the folder.

    Every claim renames a file out of the inbox. watchdog holds each such IN_MOVED_FROM for
    0.5 s, hoping to pair it with an IN_MOVED_TO, in a FIFO queue: every event behind it waits
    too, so without this every file dropped after the first waited out that hold to be seen.
    Departures mean nothing to the daemon; a file moved in arrives as an unpaired IN_MOVED_TO,
    which watchdog reports as created.

    With no departures reported, pairing has nothing to find, so it is skipped as well: for
    each IN_MOVED_TO watchdog searched its whole event queue for a partner, and during a burst
    that queue backs up, so each event cost more the bigger the burst (the numbers are in
    docs/performance.md).
    """
    from watchdog.observers.api import BaseObserver

    return BaseObserver(_arrivals_emitter_class())


def is_ignored_folder(name: str) -> bool:
    """Hidden and system folders (``.work`` among them); a folder is never junk by suffix."""
    return name.startswith(".") or name.lower() in IGNORED_DIRS


def scan(inbox: Path, recursive: bool, patterns: re.Pattern[str] | None = None) -> Iterator[str]:
    """Yield candidate rel paths lazily (none ``is_ignored`` with ``patterns``); never descends
    into hidden folders (the claims' ``.work``).
    Each folder is opened from the inbox one component at a time (``safe_paths``): never through
    a symlink a writer swapped in, and deeper than PATH_MAX too."""
    stack = [""]  # folders to read, as "/"-terminated paths relative to the inbox
    while stack:
        prefix = stack.pop()
        try:
            with opened(inbox) as inbox_fd:
                fd = open_folder(inbox_fd, prefix.split("/")[:-1])
        except OSError as exc:
            log.warning("cannot scan %s: %s", f"{inbox}/{prefix}", exc.strerror)
            continue
        try:
            with os.scandir(fd) as entries:
                for entry in entries:
                    rel = prefix + entry.name
                    if entry.is_dir(follow_symlinks=False):
                        if recursive and not is_ignored_folder(entry.name):
                            stack.append(rel + "/")
                    elif not is_ignored(rel, patterns):
                        yield rel
        finally:
            os.close(fd)
