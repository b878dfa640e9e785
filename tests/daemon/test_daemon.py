"""The daemon loop, driven one step at a time with a fake classifier (no threads, no sleeps),
and once with a real watchdog observer."""

from __future__ import annotations

import errno
import json
import os
import time

import numpy as np
import pytest
from conftest import errors as _errors
from conftest import records_by_file, running
from conftest import rows as _rows
from factories import digit_stroke, wait_for, write

from worker.daemon.loop import Daemon
from worker.daemon.settings import Settings
from worker.errors import ConfigError


def _daemon(boxes, classifier, **kw) -> Daemon:
    inbox, outbox = boxes
    settings = Settings(inbox=inbox, outbox=outbox, once=True, settle=0.2, **kw)
    daemon = Daemon(settings, classifier)
    daemon.start()
    return daemon


def _drain(daemon: Daemon, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not daemon.idle() and time.monotonic() < deadline:
        if daemon.step() == 0:
            daemon.intake.wait(0.05)


def _old(path):
    os.utime(path, (time.time() - 10, time.time() - 10))
    return path


def test_files_become_rows_and_are_archived(boxes, fake_classifier):
    inbox, outbox = boxes
    for i in range(5):
        _old(write(inbox / f"{i}.png", digit_stroke()))
    daemon = _daemon(boxes, fake_classifier)
    _drain(daemon)
    daemon.close()
    assert sorted(r["file"] for r in _rows(outbox)) == [f"{i}.png" for i in range(5)]
    assert sorted(os.listdir(outbox / "processed")) == [f"{i}.png" for i in range(5)]
    assert list(inbox.iterdir()) == [inbox / ".work"]
    assert fake_classifier.calls == 1, "one model call for the batch"


def test_bad_inputs_get_error_records_and_good_still_work(boxes, fake_classifier):
    inbox, outbox = boxes
    (inbox / "empty.png").write_bytes(b"")
    (inbox / "text.png").write_text("not an image")
    (inbox / "notes.txt").write_text("hello")
    os.mkfifo(inbox / "pipe.png")
    (inbox / "zero.png").symlink_to("/dev/zero")
    outside = write(boxes[0].parent / "outside.png", digit_stroke())
    (inbox / "escape.png").symlink_to(outside)
    png = write(inbox / "trunc.png", np.full((50, 50), 200, np.uint8))
    png.write_bytes(png.read_bytes()[:40])
    for p in inbox.iterdir():
        os.utime(p, (time.time() - 10, time.time() - 10), follow_symlinks=False)
    daemon = _daemon(boxes, fake_classifier)
    _drain(daemon)
    kinds = {e["file"]: e["kind"] for e in _errors(outbox)}
    assert kinds == {
        "empty.png": "empty", "text.png": "not-an-image", "notes.txt": "unsupported",
        "pipe.png": "not-a-regular-file", "zero.png": "not-a-regular-file",
        "escape.png": "not-a-regular-file", "trunc.png": "truncated",
    }
    for e in _errors(outbox):
        assert {"file", "kind", "message", "time"} <= set(e)
        assert e["message"].startswith(e["file"]), "messages name the user's file, not the claim"
    assert outside.exists(), "the symlink's target outside the inbox is untouched"
    _old(write(inbox / "good.png", digit_stroke()))
    daemon.intake.begin_scan(time.time())
    _drain(daemon)
    daemon.close()
    assert [r["file"] for r in _rows(outbox)] == ["good.png"]


def test_hostile_names_survive_into_csv_and_jsonl(boxes, fake_classifier):
    inbox, outbox = boxes
    names = ['comma, "quote".png', "new\nline.png", "spaces  here.png", "ünï cödé 数字.png", "x;y|z$.png"]
    for name in names:
        _old(write(inbox / name, digit_stroke()))
    daemon = _daemon(boxes, fake_classifier)
    _drain(daemon)
    daemon.close()
    assert sorted(r["file"] for r in _rows(outbox)) == sorted(names)
    lines = (outbox / "predictions.jsonl").read_text(encoding="utf-8").splitlines()
    assert sorted(json.loads(line)["file"] for line in lines) == sorted(names)
    assert sorted(os.listdir(outbox / "processed")) == sorted(names)


def test_same_name_twice_never_overwrites(boxes, fake_classifier):
    inbox, outbox = boxes
    daemon = _daemon(boxes, fake_classifier)
    for _ in range(2):
        _old(write(inbox / "x.png", digit_stroke()))
        daemon.intake.begin_scan(time.time())
        _drain(daemon)
    daemon.close()
    assert len(_rows(outbox)) == 2
    assert len(os.listdir(outbox / "processed")) == 2


def test_recursive_keeps_relative_paths(boxes, fake_classifier):
    inbox, outbox = boxes
    _old(write(inbox / "a" / "b" / "x.png", digit_stroke()))
    daemon = _daemon(boxes, fake_classifier, recursive=True)
    _drain(daemon)
    daemon.close()
    assert [r["file"] for r in _rows(outbox)] == ["a/b/x.png"]
    assert (outbox / "processed" / "a" / "b" / "x.png").exists()


def test_on_success_delete(boxes, fake_classifier):
    inbox, outbox = boxes
    _old(write(inbox / "x.png", digit_stroke()))
    daemon = _daemon(boxes, fake_classifier, on_success="delete")
    _drain(daemon)
    daemon.close()
    assert len(_rows(outbox)) == 1 and os.listdir(outbox / "processed") == []


def test_replay_after_crash_writes_no_row_twice(boxes, fake_classifier, faults):
    """Crash after the rows were durable but before the inputs left .work/."""
    inbox, outbox = boxes
    for i in range(3):
        _old(write(inbox / f"{i}.png", digit_stroke()))
    daemon = _daemon(boxes, fake_classifier)
    crash = OSError(errno.EIO, "the process dies here")
    faults.fail(os, "link", when=lambda path: "/.work/" in path, error=crash)  # archiving
    with pytest.raises(OSError, match="dies here"):
        daemon.step()
    assert len(_rows(outbox)) == 3
    daemon.close()  # its claims stay in .work/, its lock is released: as if it had died
    faults.clear()
    assert len(list((inbox / ".work").rglob("*.png"))) == 3
    restarted = _daemon(boxes, fake_classifier)
    _drain(restarted)
    restarted.close()
    assert sorted(r["file"] for r in _rows(outbox)) == ["0.png", "1.png", "2.png"]
    assert len((outbox / "predictions.jsonl").read_text().splitlines()) == 3
    assert len(os.listdir(outbox / "processed")) == 3


def test_bounded_queue_on_big_backlog(boxes, fake_classifier):
    inbox, outbox = boxes
    for i in range(50):
        _old(write(inbox / f"{i}.png", digit_stroke()))
    daemon = _daemon(boxes, fake_classifier, queue_limit=8, batch_size=4)
    _drain(daemon)
    daemon.close()
    assert len(_rows(outbox)) == 50


def test_settings_are_validated(boxes, fake_classifier):
    inbox, outbox = boxes
    with pytest.raises(ConfigError, match="not a folder"):
        Daemon(Settings(inbox=inbox / "missing", outbox=outbox), fake_classifier)
    with pytest.raises(ConfigError, match="inside the inbox"):
        Daemon(Settings(inbox=inbox, outbox=inbox / "out"), fake_classifier)
    with pytest.raises(ConfigError, match="on-success"):
        Daemon(Settings(inbox=inbox, outbox=outbox, on_success="shred"), fake_classifier)
    with pytest.raises(ConfigError, match="--close-settle must not be negative"):
        Daemon(Settings(inbox=inbox, outbox=outbox, close_settle=-1), fake_classifier)
    for glob in ("scans/*.bak", ""):
        with pytest.raises(ConfigError, match="matched on a file's name"):
            Daemon(Settings(inbox=inbox, outbox=outbox, ignore=("*.tmp", glob)), fake_classifier)


@pytest.mark.parametrize("poll", [None, 0.1])
def test_real_observer_sees_new_files(boxes, fake_classifier, poll):
    inbox, outbox = boxes
    settings = Settings(inbox=inbox, outbox=outbox, settle=0.3, poll=poll)
    daemon = Daemon(settings, fake_classifier)
    with running(daemon):
        for i in range(20):
            write(inbox / f"{i}.png", digit_stroke())
        tmp = write(boxes[0].parent / "moved.png", digit_stroke())
        os.rename(tmp, inbox / "moved.png")
        assert wait_for(lambda: (outbox / "predictions.csv").exists() and len(_rows(outbox)) == 21)
    assert len(os.listdir(outbox / "processed")) == 21


def test_slow_writer_gives_one_row_from_the_complete_image(boxes, fake_classifier):
    inbox, outbox = boxes
    data = write(boxes[0].parent / "src.png", np.full((300, 300), 230, np.uint8) - cv2_digit()).read_bytes()
    settings = Settings(inbox=inbox, outbox=outbox, settle=0.5)
    daemon = Daemon(settings, fake_classifier)
    with running(daemon):
        with open(inbox / "slow.png", "wb") as fh:
            for i in range(0, len(data), 100):
                fh.write(data[i : i + 100])
                fh.flush()
                time.sleep(2 / (len(data) / 100))
        assert wait_for(lambda: (outbox / "predictions.csv").exists() and len(_rows(outbox)) == 1)
    assert _errors(outbox) == []
    assert (outbox / "processed" / "slow.png").read_bytes() == data


def _pages(boxes) -> tuple[bytes, bytes]:
    """A PNG cut in two, as a scanner writes a file in two steps: the first alone is truncated."""
    data = write(boxes[0].parent / "whole.png", 255 - cv2_digit()).read_bytes()
    return data[: len(data) // 2], data[len(data) // 2 :]


def test_a_writer_closing_between_pages_gives_one_row_of_the_whole_file(boxes, fake_classifier):
    """Canon's and Fujitsu's scan-to-folder: write, close, pause, open again, append, close."""
    inbox, outbox = boxes
    first, rest = _pages(boxes)
    daemon = Daemon(Settings(inbox=inbox, outbox=outbox, settle=0.2, close_settle=2), fake_classifier)
    with running(daemon):
        with open(inbox / "pages.png", "wb") as fh:
            fh.write(first)
        time.sleep(0.5)  # the scanner's pause between pages, its file closed
        with open(inbox / "pages.png", "ab") as fh:
            fh.write(rest)
        assert wait_for(lambda: (outbox / "predictions.csv").exists() and len(_rows(outbox)) == 1, 10)
    assert records_by_file(outbox) == {"pages.png": "row"}
    assert (outbox / "processed" / "pages.png").read_bytes() == first + rest


def test_by_default_a_closed_file_is_claimed_at_its_close(boxes, fake_classifier):
    """--close-settle 0, the default: the close alone makes a file ready (--settle is long here),
    so such a scanner's first page is claimed alone."""
    inbox, outbox = boxes
    first, _ = _pages(boxes)
    daemon = Daemon(Settings(inbox=inbox, outbox=outbox, settle=30), fake_classifier)
    with running(daemon):
        with open(inbox / "pages.png", "wb") as fh:
            fh.write(first)
        assert wait_for(lambda: records_by_file(outbox) if (outbox / "failed").is_dir() else {}, 10)
    assert records_by_file(outbox) == {"pages.png": "truncated"}


def test_with_close_settle_a_file_moved_in_is_claimed_at_once(boxes, fake_classifier):
    inbox, outbox = boxes
    staged = write(boxes[0].parent / "staged.png", digit_stroke())
    daemon = Daemon(Settings(inbox=inbox, outbox=outbox, settle=30, close_settle=30), fake_classifier)
    with running(daemon):
        os.rename(staged, inbox / "moved.png")
        assert wait_for(lambda: (outbox / "predictions.csv").exists() and len(_rows(outbox)) == 1, 10)
    assert records_by_file(outbox) == {"moved.png": "row"}


def cv2_digit():
    import cv2
    big = cv2.resize(digit_stroke(), (100, 100))
    page = np.zeros((300, 300), np.uint8)
    page[100:200, 100:200] = big // 2
    return page


def test_disk_trouble_mid_batch_loses_nothing(boxes, fake_classifier, faults):
    """An append fails half-way (disk full) while the next batch is already claimed and
    loaded; the daemon repairs, retries, and every file still ends as exactly one row."""
    inbox, outbox = boxes
    for i in range(40):
        _old(write(inbox / f"{i}.png", digit_stroke()))
    settings = Settings(inbox=inbox, outbox=outbox, settle=0.2, batch_size=4, retry=0.01)
    daemon = Daemon(settings, fake_classifier)
    jsonl_appends = []

    def third_jsonl_append(path: str) -> bool:
        if path.endswith("predictions.jsonl"):
            jsonl_appends.append(path)
        return len(jsonl_appends) == 3 and path.endswith("predictions.jsonl")

    def torn_half(write, fd, data):
        write(fd, bytes(data)[:25])

    faults.fail(os, "write", when=third_jsonl_append, before=torn_half,
                error=OSError(errno.ENOSPC, "No space left on device"))
    with running(daemon):
        assert wait_for(lambda: len(_rows(outbox)) == 40 and daemon.idle())
    lines = (outbox / "predictions.jsonl").read_text().splitlines()
    assert sorted(json.loads(line)["file"] for line in lines) == sorted(f"{i}.png" for i in range(40))
    assert faults.failures == 1 and len(jsonl_appends) > 3, "the failure never happened"
    assert len(os.listdir(outbox / "processed")) == 40
    assert list((inbox / ".work").iterdir()) == []  # nothing left claimed
