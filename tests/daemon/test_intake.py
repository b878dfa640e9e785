"""Intake on its own, driven by ``now`` and a fake clock: what is ready, and when."""

from __future__ import annotations

import os
import queue
import time

from factories import digit_stroke, write

from worker.daemon.intake import BURST_EVENTS, Intake
from worker.daemon.settings import Settings
from worker.daemon.watch import MOVED


def _old_files(folder, count: int) -> list[str]:
    names = [f"{i:03d}.png" for i in range(count)]
    for name in names:
        os.utime(write(folder / name, digit_stroke()), (time.time() - 60, time.time() - 60))
    return names


def _intake(folder, clock=time.time, **settings) -> Intake:
    intake = Intake(folder, Settings(inbox=folder, settle=1.0, **settings), clock)
    intake.start(clock(), observe=False)
    return intake


def test_a_scan_fills_the_tracker_up_to_the_queue_limit_only(tmp_path):
    names = _old_files(tmp_path, 50)
    intake = _intake(tmp_path, queue_limit=8)
    assert intake.ready(time.time(), 0) == [] and len(intake) == 8
    seen = []
    while not intake.idle():
        seen += intake.ready(time.time(), 4)
        assert len(intake) <= 8
    assert sorted(seen) == names


def test_rescan_is_due_by_the_clock_it_is_given(tmp_path):
    intake = _intake(tmp_path, clock=lambda: 1000.0, rescan=300)
    assert not intake.rescan_due(1299.0)
    assert intake.rescan_due(1300.0)
    intake.begin_scan(1300.0)
    assert not intake.rescan_due(1599.0)


def test_a_file_still_settling_is_not_ready_until_now_says_so(tmp_path):
    now = time.time()
    write(tmp_path / "new.png", digit_stroke())
    os.utime(tmp_path / "new.png", (now, now))
    intake = _intake(tmp_path, clock=lambda: now)
    assert intake.ready(now, 10) == []
    assert intake.ready(now + 0.5, 10) == []
    assert intake.ready(now + 1.5, 10) == ["new.png"]


def test_a_burst_of_events_starts_a_scan_that_finds_the_rest(tmp_path):
    names = _old_files(tmp_path, BURST_EVENTS + 10)
    intake = _intake(tmp_path)
    assert sorted(intake.ready(time.time(), 1000)) == names  # the start-up scan
    names = _old_files(tmp_path, BURST_EVENTS + 10)
    for name in names[:BURST_EVENTS]:  # the events of the first files only reached us
        intake.events.queue.put_nowait((name, MOVED))
    assert sorted(intake.ready(time.time(), 1000)) == names


class EndlessEvents(queue.Queue):
    """Events that never stop coming, each for a file that is never there."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def empty(self) -> bool:
        return False

    def get_nowait(self):
        self.count += 1
        return f"missing-{self.count}.png", MOVED


def test_filling_a_batch_waits_no_longer_than_max_delay_on_the_clock(tmp_path):
    _old_files(tmp_path, 1)
    reads, start = [], time.time()

    def clock() -> float:  # a millisecond passes at each look
        reads.append(1)
        return start + len(reads) / 1000

    intake = _intake(tmp_path, clock=clock, max_delay_ms=5, queue_limit=16)
    intake.ready(clock(), 0)  # the scan finds the file
    intake.events.queue = EndlessEvents()
    before = len(reads)
    assert intake.ready(clock(), 10) == ["000.png"]
    assert 5 <= len(reads) - before <= 8, "it looked at the clock until the deadline, no longer"
