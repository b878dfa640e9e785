"""Which files are candidates and when they are ready."""

from __future__ import annotations

import os
import time

import pytest
from factories import wait_for

from worker.watch import (
    CLOSED,
    EVENT_FILTER,
    InboxEvents,
    StabilityTracker,
    arrivals_observer,
    is_ignored,
    relative,
    scan,
)


@pytest.mark.parametrize(
    "rel",
    [".hidden.png", "x.png.part", "x.tmp", "x.png~", ".DS_Store", "Thumbs.db", "desktop.ini",
     "._x.png", "@eaDir/x.png", ".work/abc/x.png", "a/.git/x.png"],
)
def test_junk_is_ignored(rel):
    assert is_ignored(rel)


@pytest.mark.parametrize("rel", ["x.png", "scan 1, copy.JPG", "a/b/x.tif", "notes.txt", "ünï.png"])
def test_real_files_are_candidates(rel):
    assert not is_ignored(rel)


def _touch(path, data=b"x", mtime=None):
    path.write_bytes(data)
    if mtime is not None:
        os.utime(path, (mtime, mtime))


def test_closed_file_is_ready_at_once(tmp_path):
    _touch(tmp_path / "a.png")
    tracker = StabilityTracker(settle=5)
    tracker.note("a.png", CLOSED)
    assert tracker.pop_ready(tmp_path, time.time(), 10) == ["a.png"]
    assert len(tracker) == 0


def test_old_file_from_scan_is_ready_at_once(tmp_path):
    _touch(tmp_path / "a.png", mtime=time.time() - 60)
    tracker = StabilityTracker(settle=1)
    tracker.note("a.png")
    assert tracker.pop_ready(tmp_path, time.time(), 10) == ["a.png"]


def test_file_being_written_waits_until_settled(tmp_path):
    now = time.time()
    _touch(tmp_path / "a.png", b"12", mtime=now)
    tracker = StabilityTracker(settle=1)
    tracker.note("a.png")
    assert tracker.pop_ready(tmp_path, now, 10) == []
    _touch(tmp_path / "a.png", b"1234", mtime=now + 0.5)  # still growing
    assert tracker.pop_ready(tmp_path, now + 0.9, 10) == []
    assert tracker.pop_ready(tmp_path, now + 1.6, 10) == ["a.png"]


def test_never_gives_up_on_a_changing_file(tmp_path):
    now = time.time()
    tracker = StabilityTracker(settle=1)
    tracker.note("a.png")
    for step in range(20):
        _touch(tmp_path / "a.png", b"x" * (step + 1), mtime=now + step)
        assert tracker.pop_ready(tmp_path, now + step + 0.5, 10) == []
    assert "a.png" in tracker


def test_deleted_before_stable_is_forgotten(tmp_path):
    tracker = StabilityTracker(settle=1)
    tracker.note("gone.png")
    assert tracker.pop_ready(tmp_path, time.time(), 10) == []
    assert len(tracker) == 0


def test_empty_file_waits_for_settle_even_if_closed(tmp_path):
    now = time.time()
    _touch(tmp_path / "e.png", b"", mtime=now)
    tracker = StabilityTracker(settle=1)
    tracker.note("e.png", CLOSED)
    assert tracker.pop_ready(tmp_path, now, 10) == []
    assert tracker.pop_ready(tmp_path, now + 1.5, 10) == ["e.png"]


def test_fifo_is_ready_without_reading(tmp_path):
    os.mkfifo(tmp_path / "p.png")
    tracker = StabilityTracker(settle=10)
    tracker.note("p.png")
    assert tracker.pop_ready(tmp_path, time.time(), 10) == ["p.png"]


def test_limit_is_respected(tmp_path):
    tracker = StabilityTracker(settle=0)
    for i in range(10):
        _touch(tmp_path / f"{i}.png")
        tracker.note(f"{i}.png", CLOSED)
    assert len(tracker.pop_ready(tmp_path, time.time(), 4)) == 4
    assert len(tracker) == 6


def test_scan_skips_work_and_junk_and_respects_recursive(tmp_path):
    for rel in ["a.png", "b.txt", ".work/x/y.png", "sub/c.png", "x.part", "@eaDir/t.png"]:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"1")
    assert sorted(scan(tmp_path, recursive=False)) == ["a.png", "b.txt"]
    assert sorted(scan(tmp_path, recursive=True)) == ["a.png", "b.txt", "sub/c.png"]


def test_relative_paths_of_watchdog_events(tmp_path):
    inbox = tmp_path / "inbox"
    assert relative(inbox, f"{inbox}/a.png") == "a.png"
    assert relative(inbox, f"{inbox}/sub/a.png") == "sub/a.png"
    assert relative(inbox, str(inbox)) is None
    assert relative(inbox, f"{inbox}-other/a.png") is None


def test_arrivals_observer_reports_arrivals_only_and_never_pairs_moves(tmp_path):
    inbox, elsewhere = tmp_path / "inbox", tmp_path / "elsewhere"
    inbox.mkdir()
    elsewhere.mkdir()
    for i in range(300):
        (elsewhere / f"{i:03d}.png").write_bytes(b"x")
    (inbox / "leaving.png").write_bytes(b"x")
    events = InboxEvents(inbox, limit=10_000, recursive=False)
    observer = arrivals_observer()
    observer.schedule(events, str(inbox), event_filter=EVENT_FILTER)
    observer.start()
    try:
        (emitter,) = observer.emitters
        # watchdog's pairing search cost more per event the bigger the burst; an upgrade must not
        # bring it back
        assert type(emitter._inotify._move_event_grouper).__name__ == "UnpairedMoves"
        os.rename(inbox / "leaving.png", elsewhere / "leaving.png")
        for i in range(300):
            os.rename(elsewhere / f"{i:03d}.png", inbox / f"{i:03d}.png")
        seen = []
        assert wait_for(lambda: seen.extend(_drain(events)) or len(seen) >= 300, 10)
    finally:
        observer.stop()
        observer.join()
    assert sorted(rel for rel, _ in seen) == [f"{i:03d}.png" for i in range(300)]  # no departure


def _drain(events: InboxEvents) -> list:
    items = []
    while not events.queue.empty():
        items.append(events.queue.get_nowait())
    return items
