"""Intake: which inbox files are ready to claim now.

Files are found two ways: inotify events (through watchdog) and scans
of the folder (at start, every ``rescan`` seconds because events can be lost, and at once when
events overflow their queue or come in a burst). Both feed one ``StabilityTracker``, bounded by
``queue_limit``; ``ready(now, limit)`` answers with the paths that are complete, and while
events keep coming it waits up to ``max_delay_ms`` to fill a batch. Every clock read goes
through the injected ``clock`` (or the ``now`` a caller passes), so tests drive it in time.
"""

from __future__ import annotations

import queue
from collections.abc import Callable, Iterator
from pathlib import Path

from worker.daemon.settings import Settings
from worker.daemon.watch import (
    EVENT_FILTER,
    InboxEvents,
    StabilityTracker,
    arrivals_observer,
    ignore_patterns,
    scan,
)

# This many events in one step mean a burst: scanning the folder finds the whole burst at once,
# where events arrive one at a time.
BURST_EVENTS = 32


class Intake:
    def __init__(self, inbox: Path, settings: Settings, clock: Callable[[], float]) -> None:
        self.inbox = inbox
        self.settings = settings
        self.clock = clock
        self.tracker = StabilityTracker(settings.settle, settings.settle_open, settings.close_settle)
        self.patterns = ignore_patterns(settings.ignore)
        self.events = InboxEvents(inbox, settings.queue_limit, settings.recursive, self.patterns)
        self.observer = None
        self._scanner: Iterator[str] | None = None
        self._last_scan = self._last_poll = 0.0
        self.arrived: dict[str, float] = {}  # of the files the last ``ready`` gave: when they arrived

    def __len__(self) -> int:
        """How many candidate files are being tracked (at most ``queue_limit``)."""
        return len(self.tracker)

    def start(self, now: float, *, observe: bool) -> None:
        """Begin the start-up scan and, unless ``observe`` is False (--once), watch for events:
        inotify, or with ``--poll`` a scan of the folder every ``poll`` seconds."""
        if observe and not self.settings.poll:
            self.observer = arrivals_observer()
            self.observer.schedule(self.events, str(self.inbox), recursive=self.settings.recursive,
                                   event_filter=EVENT_FILTER)
            self.observer.start()
        self.begin_scan(now)

    def stop(self) -> None:
        if self.observer is not None:
            self.observer.stop()
            self.observer.join()
            self.observer = None

    def idle(self) -> bool:
        """No scan under way and nothing tracked."""
        return self._scanner is None and len(self.tracker) == 0

    def _poll_due(self, now: float) -> bool:
        """With --poll, a folder listing every ``poll`` seconds finds arrivals. It reads names
        only (junk is dropped by name, before any stat), so thousands of ignored files cost
        little; watchdog's polling observer stats every file at every poll."""
        poll = self.settings.poll
        return bool(poll) and self._scanner is None and now - self._last_poll >= poll

    def rescan_due(self, now: float) -> bool:
        return now - self._last_scan >= self.settings.rescan

    def begin_scan(self, now: float) -> None:
        """Start a full scan (read lazily, a slice per step) and count the rescan time from now."""
        self._last_scan = now
        self._scanner = self._scan()

    def _scan(self) -> Iterator[str]:
        return scan(self.inbox, self.settings.recursive, self.patterns)

    def ready(self, now: float, limit: int) -> list[str]:
        """Up to ``limit`` paths (relative to the inbox) ready to claim. A lone file is not held
        back: with no event pending, the batch goes at once."""
        burst = self._drain_events() >= BURST_EVENTS and self._scanner is None
        if burst or self.events.overflowed:  # events lost or slow: a scan finds the files now
            self._scanner = self._scan()
        elif self._poll_due(now):
            self._last_poll = now
            self._scanner = self._scan()
        self.events.overflowed = False
        self._fill_from_scan()
        self.arrived.clear()
        ready = self._pop_ready(now, limit)
        deadline = self.clock() + self.settings.max_delay_ms / 1000
        while ready and len(ready) < limit and not self.events.queue.empty():
            now = self.clock()
            if now > deadline:
                break
            self._drain_events()
            ready += self._pop_ready(now, limit - len(ready))
        return ready

    def _pop_ready(self, now: float, limit: int) -> list[str]:
        ready = self.tracker.pop_ready(self.inbox, now, limit)
        self.arrived.update(self.tracker.arrived)
        return ready

    def wait(self, timeout: float) -> None:
        """Block until an event arrives (or ``timeout`` seconds pass)."""
        try:
            rel, kind = self.events.queue.get(timeout=timeout)
        except queue.Empty:
            return
        self.tracker.note(rel, kind)

    def _fill_from_scan(self) -> None:
        """Top the tracker up from the scan, never beyond the queue limit."""
        while self._scanner is not None and len(self.tracker) < self.settings.queue_limit:
            rel = next(self._scanner, None)
            if rel is None:
                self._scanner = None
            else:
                self.tracker.note(rel)

    def _drain_events(self) -> int:
        """Move queued events into the tracker (up to its limit); return how many."""
        count = 0
        while len(self.tracker) < self.settings.queue_limit:
            try:
                rel, kind = self.events.queue.get_nowait()
            except queue.Empty:
                break
            self.tracker.note(rel, kind)
            count += 1
        return count
