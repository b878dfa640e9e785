"""Which files are candidates and when they are ready."""

from __future__ import annotations

import os
import time

import pytest
from factories import wait_for

from worker.daemon.watch import (
    CLOSED,
    EVENT_FILTER,
    MOVED,
    WRITE,
    InboxEvents,
    StabilityTracker,
    arrivals_observer,
    ignore_patterns,
    is_ignored,
    relative,
    scan,
)


@pytest.mark.parametrize(
    "rel",
    [".hidden.png", "x.png.part", "x.tmp", "x.png~", ".DS_Store", "Thumbs.db", "desktop.ini",
     "._x.png", "@eaDir/x.png", ".work/abc/x.png", "a/.git/x.png", "x.png.filepart", "x.png.!sync",
     "x.png.download", "x.PNG.CRDOWNLOAD", "~$report.docx", "sub/~$x.png"],
)
def test_junk_is_ignored(rel):
    assert is_ignored(rel)


@pytest.mark.parametrize("rel", ["x.png", "scan 1, copy.JPG", "a/b/x.tif", "notes.txt", "ünï.png",
                                 "~scan.png", "download.png", "x.sync.png", "$x.png"])
def test_real_files_are_candidates(rel):
    assert not is_ignored(rel)


def test_a_sites_patterns_match_names_whatever_their_case_never_folders():
    patterns = ignore_patterns(["*.bak", "Scan_TMP*", "lock?"])
    for rel in ["x.bak", "X.BAK", "sub/x.Bak", "scan_tmp.png", "SCAN_TMP 2.pdf", "lock1"]:
        assert is_ignored(rel, patterns), rel
    for rel in ["x.bak.png", "x.png", "scan_tmp/x.png", "my scan_tmp.png", "lock12"]:
        assert not is_ignored(rel, patterns), rel
    assert ignore_patterns([]) is None
    assert not is_ignored("x.bak")  # none given: the built-in list alone


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


def test_with_close_settle_a_closed_file_waits_until_it_stayed_closed_that_long(tmp_path):
    # Its last write long ago, and its ctime later (as a writer setting the file's time leaves it):
    # it looks moved in, but a close was heard.
    _touch(tmp_path / "a.png", b"page 1", mtime=time.time() - 60)
    tracker = StabilityTracker(settle=0.2, close_settle=1)
    tracker.note("a.png", CLOSED)
    now = time.time()
    assert tracker.pop_ready(tmp_path, now, 10) == []
    assert tracker.pop_ready(tmp_path, now + 0.9, 10) == []
    assert tracker.pop_ready(tmp_path, now + 1.0, 10) == ["a.png"]


def test_a_file_written_again_after_its_close_starts_the_wait_again(tmp_path):
    path = tmp_path / "a.png"
    _touch(path, b"page 1")
    tracker = StabilityTracker(settle=0.2, close_settle=1)
    tracker.note("a.png", CLOSED)
    now = time.time()
    assert tracker.pop_ready(tmp_path, now, 10) == []
    with open(path, "ab") as fh:  # opened again for the next page, 0.5 s after the close
        tracker.note("a.png", WRITE)
        assert tracker.pop_ready(tmp_path, now + 0.5, 10) == []
        fh.write(b" page 2")
    tracker.note("a.png", CLOSED)
    assert tracker.pop_ready(tmp_path, now + 0.6, 10) == []
    assert tracker.pop_ready(tmp_path, now + 1.5, 10) == [], "1 s from the first close, not the last"
    assert tracker.pop_ready(tmp_path, now + 1.6, 10) == ["a.png"]


def test_a_change_without_an_event_also_starts_the_wait_again(tmp_path):
    """Events can be lost: a closed file seen to change (size, mtime, inode) waits again."""
    path = tmp_path / "a.png"
    _touch(path, b"page 1")
    tracker = StabilityTracker(settle=0.2, close_settle=1)
    tracker.note("a.png", CLOSED)
    now = time.time()
    assert tracker.pop_ready(tmp_path, now, 10) == []
    _touch(path, b"page 1 page 2")
    assert tracker.pop_ready(tmp_path, now + 0.9, 10) == []
    assert tracker.pop_ready(tmp_path, now + 1.5, 10) == []
    os.rename(tmp_path / "a.png", tmp_path / "old.png")  # another file, of the same size and mtime
    _touch(path, b"page 1 page 2")
    os.utime(path, ns=(os.stat(tmp_path / "old.png").st_mtime_ns,) * 2)
    assert tracker.pop_ready(tmp_path, now + 1.95, 10) == []
    assert tracker.pop_ready(tmp_path, now + 3.0, 10) == ["a.png"]


def test_with_close_settle_a_moved_in_file_is_still_ready_at_once(tmp_path):
    _touch(tmp_path / "a.png")
    tracker = StabilityTracker(settle=1, close_settle=30)
    tracker.note("a.png", MOVED)
    assert tracker.pop_ready(tmp_path, time.time(), 10) == ["a.png"]


def test_with_close_settle_a_file_a_scan_finds_waits_as_long_as_a_closed_one(tmp_path):
    """No event tells whether its writer is between two pages: its last write must be that old."""
    _touch(tmp_path / "recent.png")
    _touch(tmp_path / "old.png", mtime=time.time() - 60)
    written = os.stat(tmp_path / "recent.png").st_mtime
    tracker = StabilityTracker(settle=1, close_settle=5)
    tracker.note("recent.png")
    tracker.note("old.png")
    assert tracker.pop_ready(tmp_path, written, 10) == ["old.png"]
    assert tracker.pop_ready(tmp_path, written + 4.9, 10) == []
    assert tracker.pop_ready(tmp_path, written + 5.0, 10) == ["recent.png"]


def test_with_close_settle_a_file_open_for_writing_waits_at_least_as_long(tmp_path):
    now = time.time()
    _touch(tmp_path / "a.png", mtime=now)
    tracker = StabilityTracker(settle=0.2, settle_open=1, close_settle=5)
    tracker.note("a.png", WRITE)
    assert tracker.pop_ready(tmp_path, now + 4.9, 10) == []
    assert tracker.pop_ready(tmp_path, now + 5.0, 10) == ["a.png"]


def test_scan_skips_work_and_junk_and_respects_recursive(tmp_path):
    for rel in ["a.png", "b.txt", ".work/x/y.png", "sub/c.png", "x.part", "@eaDir/t.png", "x.filepart",
                "~$x.docx", "d.BAK", "sub/e.bak"]:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"1")
    assert sorted(scan(tmp_path, recursive=False)) == ["a.png", "b.txt", "d.BAK"]
    assert sorted(scan(tmp_path, recursive=True)) == ["a.png", "b.txt", "d.BAK", "sub/c.png", "sub/e.bak"]
    patterns = ignore_patterns(["*.bak"])
    assert sorted(scan(tmp_path, recursive=True, patterns=patterns)) == ["a.png", "b.txt", "sub/c.png"]


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


def test_events_of_ignored_files_never_reach_the_queue(tmp_path):
    """A real observer: a WinSCP upload (``.filepart``, renamed when whole) and a site's pattern."""
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    events = InboxEvents(inbox, limit=100, recursive=False, patterns=ignore_patterns(["*.bak"]))
    observer = arrivals_observer()
    observer.schedule(events, str(inbox), event_filter=EVENT_FILTER)
    observer.start()
    try:
        for name in ("x.png.filepart", "x.BAK", "~$x.docx", "y.png.!sync", "z.png.download"):
            (inbox / name).write_bytes(b"x")
        os.rename(inbox / "x.png.filepart", inbox / "x.png")
        seen = []
        assert wait_for(lambda: seen.extend(_drain(events)) or ("x.png", MOVED) in seen, 10)
    finally:
        observer.stop()
        observer.join()
    assert {rel for rel, _ in seen} == {"x.png"}
