"""The web page's live state (issue 27, item 3): kept from what was appended to the outbox's
files, so a poll or an event costs what changed, not the outbox's size; an outbox edited by a
person starts it over, never crashes it. Work is counted (bytes read, records parsed), never
timed."""

from __future__ import annotations

import json
import os
from datetime import date
from pathlib import Path

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from worker.outbox.records import ERROR_SUFFIX, FAILED_DIR, JSONL_NAME
from worker.outbox.reviews import REVIEWS_NAME, Decision, Undo
from worker.web import outbox_view
from worker.web.growing import GrowingFile
from worker.web.live import LiveOutbox
from worker.web.review_queue import ReviewQueue

CLASSES = [str(d) for d in range(10)]


def row(n: int, confidence: float | None = None, flagged: bool | None = None) -> dict:
    """Row ``n``: its confidence and flag vary with ``n`` unless given."""
    confidence = 0.3 + 0.69 * ((n * 7919) % 1000) / 1000 if confidence is None else confidence
    label = CLASSES[n % 10]
    rest = (1 - confidence) / 9
    probabilities = {c: round(confidence if c == label else rest, 6) for c in CLASSES}
    flagged = n % 3 == 0 if flagged is None else flagged
    return {"id": f"{n:020x}", "file": f"scan-{n}.png", "label": label, "confidence": round(confidence, 6),
            "class_index": n % 10, "sha256": "ab" * 32, "model": "m", "model_version": "v1",
            "processed_at": "2026-12-03T10:00:00.000Z", "probabilities": probabilities,
            "review": "low-confidence" if flagged else "", "review_score": 1.0}


def line(record: dict) -> bytes:
    return orjson.dumps(record) + b"\n"


def append(path: Path, data: bytes) -> None:
    with open(path, "ab") as fh:
        fh.write(data)


def write_rows(outbox: Path, numbers) -> None:
    append(outbox / JSONL_NAME, b"".join(line(row(n)) for n in numbers))


def decide(outbox: Path, n: int, label: str = "1", undo: bool = False) -> None:
    given = {"id": f"{n:020x}", "file": f"scan-{n}.png", "predicted": row(n)["label"],
             ("undone" if undo else "label"): label, "time": "2026-12-03T10:00:01.000Z"}
    append(outbox / REVIEWS_NAME, line(given))


def write_error(outbox: Path, name: str, day: str = "2026-12-03") -> None:
    failed = outbox / FAILED_DIR
    failed.mkdir(exist_ok=True)
    record = {"file": name, "kind": "not-an-image", "message": "no image", "time": f"{day}T10:00:00Z"}
    (failed / f"{name}{ERROR_SUFFIX}").write_text(json.dumps(record))


@pytest.fixture
def boxes(tmp_path):
    inbox, outbox = tmp_path / "inbox", tmp_path / "outbox"
    inbox.mkdir()
    outbox.mkdir()
    return inbox, outbox


# --- the growing file --------------------------------------------------------------------------

def test_only_whole_appended_lines_are_read_each_once(tmp_path):
    path = tmp_path / "x.jsonl"
    follower = GrowingFile(path, start_tail=None, max_line=100)
    assert follower.appended().lines == []  # no file yet
    append(path, b'{"a": 1}\n{"b": 2')
    assert follower.appended().lines == [b'{"a": 1}\n']
    assert follower.appended().lines == []
    append(path, b'}\n')
    assert follower.appended().lines == [b'{"b": 2}\n'], "the torn line, once whole"


def test_a_file_shrunk_replaced_or_rewritten_starts_over(tmp_path):
    path = tmp_path / "x.jsonl"
    follower = GrowingFile(path, start_tail=None, max_line=100)
    path.write_bytes(b"one\ntwo\n")
    assert follower.appended().lines == [b"one\n", b"two\n"]
    path.write_bytes(b"3\n")  # shrunk (truncated, rewritten shorter)
    found = follower.appended()
    assert found.reset and found.lines == [b"3\n"]
    other = tmp_path / "new"
    other.write_bytes(b"four\n")
    os.replace(other, path)  # replaced: another inode, even longer
    found = follower.appended()
    assert found.reset and found.lines == [b"four\n"]
    with open(path, "r+b") as fh:  # rewritten in place, longer: no line end where the last look stopped
        fh.write(b"fourteen\n")
    found = follower.appended()
    assert found.reset and found.lines == [b"fourteen\n"]
    path.unlink()
    assert follower.appended().reset, "gone"
    path.mkdir()
    assert follower.appended().lines == [], "a folder in its place is no file"


def test_a_line_longer_than_the_cap_is_passed_over_never_held(tmp_path):
    path = tmp_path / "x.jsonl"
    follower = GrowingFile(path, start_tail=None, max_line=100, read_bytes=150)
    path.write_bytes(b"x" * 1000)  # no end yet
    for _ in range(10):
        assert follower.appended().lines == []
    assert follower.bytes_read <= 1000 + 150, "each byte of it read about once"
    append(path, b"x\nok\n")
    assert follower.appended().lines == [b"ok\n"]


def test_a_new_file_is_read_from_its_tail(tmp_path):
    path = tmp_path / "x.jsonl"
    path.write_bytes(b"".join(b"line %06d\n" % n for n in range(10_000)))  # 12 bytes a line
    follower = GrowingFile(path, start_tail=1200, max_line=100)
    lines = follower.appended().lines
    assert lines[-1] == b"line 009999\n" and len(lines) == 99, "the first, cut, left out"
    assert follower.bytes_read == 1200


# --- the review queue --------------------------------------------------------------------------

def test_the_queue_kept_is_the_report_s_queue_through_decisions_and_undos(boxes):
    """With room for 50 rows and 2,000 of them, and 70 decisions (some undone): the head is
    the queue the report makes of the whole file, until too few are left above the floor."""
    _, outbox = boxes
    write_rows(outbox, range(2000))
    queue = ReviewQueue(capacity=50)
    for n in range(2000):
        queue.add_row(row(n))
    head = queue.rows(10)
    assert [r["id"] for r in head] == [r["id"] for r in outbox_view.review_queue(outbox, 10)]
    for number, item in enumerate(head * 7):
        n = int(item["id"], 16)
        if number < 10:
            decide(outbox, n)
            queue.decide(Decision(item["id"], "1"))
        elif number < 15:
            decide(outbox, n, undo=True)
            queue.decide(Undo(item["id"], "1"))
        shown = queue.rows(10)
        assert queue.complete(10)
        assert [r["id"] for r in shown] == [r["id"] for r in outbox_view.review_queue(outbox, 10)]
    for item in queue.rows(50):
        queue.decide(Decision(item["id"], "2"))
    assert not queue.complete(10), "every row above the floor decided: says so"


# --- the live state and its cost -----------------------------------------------------------------

def _outbox_of(root: Path, rows: int, errors: int) -> tuple[Path, Path]:
    inbox, outbox = root / "inbox", root / "outbox"
    inbox.mkdir(parents=True)
    outbox.mkdir()
    template = line(row(1))
    with open(outbox / JSONL_NAME, "wb") as fh:  # the same row, ids apart: a big file made fast
        for start in range(0, rows, 10_000):
            fh.write(b"".join(template.replace(b'"00000000000000000001"', b'"%020x"' % n)
                              for n in range(start, min(rows, start + 10_000))))
    for n in range(errors):
        write_error(outbox, f"bad-{n}.png")
    decide(outbox, 1)
    return inbox, outbox


def _work(live: LiveOutbox) -> tuple[int, int]:
    return live.bytes_read, live.records_parsed


def _cost_of_a_poll_and_an_event(live: LiveOutbox, outbox: Path) -> tuple:
    """(work of a poll when nothing changed, work of taking in 5 rows, a decision and an error
    record)."""
    live.look()
    before = _work(live)
    live.look()
    idle = _work(live)
    write_rows(outbox, range(10**6, 10**6 + 5))
    decide(outbox, 10**6)
    write_error(outbox, "new.png")
    versions = live.look()
    after = _work(live)
    assert live.latest(5)["rows"][0]["file"] == f"scan-{10**6 + 4}.png"
    assert versions["review"] > 0 and live.latest(20)["failures"]
    return tuple(b - a for a, b in zip(before, idle, strict=True)), \
        tuple(b - a for a, b in zip(idle, after, strict=True))


def test_a_poll_or_an_event_costs_the_same_with_100_000_records_as_with_10(tmp_path):
    # A clock that stands still: the listing of failed/ is never put off for being slow.
    small = LiveOutbox(*_outbox_of(tmp_path / "small", rows=10, errors=10), clock=lambda: 0.0)
    large = LiveOutbox(*_outbox_of(tmp_path / "large", rows=100_000, errors=20_000), clock=lambda: 0.0)
    small_idle, small_event = _cost_of_a_poll_and_an_event(small, tmp_path / "small" / "outbox")
    large_idle, large_event = _cost_of_a_poll_and_an_event(large, tmp_path / "large" / "outbox")
    assert small_idle == large_idle == (0, 0), "a poll when nothing changed reads nothing"
    assert small_event == large_event, "what changed is read, and only that"
    assert large_event[1] == 5 + 1 + 1, "5 rows, a decision, an error record"


def test_the_state_at_start_is_read_from_the_jsonl_s_tail_not_its_whole(tmp_path):
    _, outbox = paths = _outbox_of(tmp_path, rows=100_000, errors=0)
    live = LiveOutbox(*paths)
    live.look()
    assert (outbox / JSONL_NAME).stat().st_size > 40 * outbox_view.TAIL_BYTES / 4
    assert live.bytes_read <= outbox_view.TAIL_BYTES + (outbox / REVIEWS_NAME).stat().st_size + 8


def test_failures_today_and_the_newest_come_from_records_read_once(boxes):
    inbox, outbox = boxes
    write_error(outbox, "old.png", day="2020-01-01")
    for n in range(3):
        write_error(outbox, f"today-{n}.png", day=date.today().isoformat())
    live = LiveOutbox(inbox, outbox, clock=lambda: 0.0)  # standing still: each change is listed
    live.look()
    shown = live.latest(1)
    assert shown["status"]["failed_today"] == {"not-an-image": 3}
    assert shown["status"]["daemons_alive"] == 0 and shown["status"]["waiting"] == 0, "made at the first look"
    assert {f["file"] for f in shown["failures"]} == {"old.png", "today-0.png", "today-1.png", "today-2.png"}
    (outbox / FAILED_DIR / f"old.png{ERROR_SUFFIX}").unlink()
    live.look()
    assert "old.png" not in {f["file"] for f in live.latest(1)["failures"]}


def test_an_outbox_edited_by_a_person_starts_the_state_over(boxes):
    inbox, outbox = boxes
    write_rows(outbox, range(30))
    decide(outbox, 3)
    live = LiveOutbox(inbox, outbox)
    live.look()
    assert len(live.latest(200)["rows"]) == 30
    assert f"{3:020x}" not in {r["id"] for r in live.review(200)}
    # The JSONL cut to its first 5 rows and a line of junk; reviews.jsonl emptied.
    kept = b"".join((outbox / JSONL_NAME).read_bytes().splitlines(keepends=True)[:5])
    (outbox / JSONL_NAME).write_bytes(kept + b"\x00junk{\n")
    (outbox / REVIEWS_NAME).write_bytes(b"")
    live.look()
    assert [r["file"] for r in live.latest(200)["rows"]] == [f"scan-{n}.png" for n in range(4, -1, -1)]
    assert f"{3:020x}" in {r["id"] for r in live.review(200)}, "the decision is gone with its file"
    # Replaced by another file, then by a folder: an empty state, no error.
    (outbox / JSONL_NAME).unlink()
    write_rows(outbox, [77])
    live.look()
    assert [r["file"] for r in live.latest(200)["rows"]] == ["scan-77.png"]
    (outbox / JSONL_NAME).unlink()
    (outbox / JSONL_NAME).mkdir()
    live.look()
    assert live.latest(200)["rows"] == [] and live.review(200) == []


def test_the_folders_status_is_made_again_on_a_thread_at_most_every_few_seconds(boxes):
    from factories import wait_for

    from worker.web.live import STATUS_SECONDS

    inbox, outbox = boxes
    now = [1000.0]
    live = LiveOutbox(inbox, outbox, clock=lambda: now[0])
    first = live.look()
    (inbox / "waiting.png").write_bytes(b"x")
    now[0] += STATUS_SECONDS / 2
    live.look()
    assert live.latest(1)["status"]["waiting"] == 0, "not yet due"
    now[0] += STATUS_SECONDS
    live.look()
    assert wait_for(lambda: live.latest(1)["status"]["waiting"] == 1, 10)
    assert live.look()["latest"] > first["latest"], "a change of the status is told"


def test_a_slow_failed_folder_is_listed_no_more_than_a_tenth_of_the_time(boxes):
    """A clock that moves a second at each reading: every listing takes a second, so the next
    waits ten, however often the folder changes."""
    import itertools

    inbox, outbox = boxes
    write_error(outbox, "first.png")
    ticks = itertools.count(0.0, 1.0)
    live = LiveOutbox(inbox, outbox, clock=lambda: next(ticks))
    live.look()
    write_error(outbox, "second.png")
    live.look()
    assert {f["file"] for f in live.latest(1)["failures"]} == {"first.png"}, "listed a moment ago"
    for _ in range(10):
        live.look()
    assert {f["file"] for f in live.latest(1)["failures"]} == {"first.png", "second.png"}


@settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.lists(st.tuples(st.sampled_from(["append", "truncate", "replace"]),
                          st.binary(max_size=40).map(lambda b: b.replace(b"\r", b""))), max_size=12),
       st.integers(10, 50))
def test_the_lines_read_are_the_file_s_whole_lines_whatever_is_done_to_it(steps, read_bytes):
    """Appends cut anywhere, truncations, replacements, looks between each: what was read since
    the last start over is always the file's whole lines of at most ``max_line`` bytes."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp, "x.jsonl")
        follower = GrowingFile(path, start_tail=None, max_line=16, read_bytes=read_bytes)
        read: list[bytes] = []
        for how, data in steps:
            if how == "append":
                append(path, data)
            elif how == "truncate":
                with open(path, "ab") as fh:
                    fh.truncate(len(data) % 7)
            else:
                Path(tmp, "new").write_bytes(data)
                os.replace(Path(tmp, "new"), path)
            for _ in range(40):  # looks until all is read (read_bytes at a time)
                found = follower.appended()
                read = list(found.lines) if found.reset else read + found.lines
                if not found.more:
                    break
            whole = path.read_bytes().split(b"\n")[:-1] if path.exists() else []
            expected = [line + b"\n" for line in whole if 0 < len(line) < 16]
            assert read == expected
