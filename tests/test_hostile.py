"""Hostile files and single faults: one file's trouble is that file's trouble, disk trouble is
waited out, and nothing is ever lost, torn or deleted. Each test names the case it guards."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import TEST_USER, drain, errors, other_user_ids, records_by_file, rows, running
from factories import digit_stroke, wait_for, write

from worker.daemon.loop import Daemon
from worker.daemon.settings import Settings


def _old(path: Path) -> Path:
    os.utime(path, (time.time() - 10, time.time() - 10), follow_symlinks=False)
    return path






def _nothing_claimed(inbox: Path) -> bool:
    return not [p for p in (inbox / ".work").rglob("*") if not p.is_dir() and p.suffix != ".lock"]


def test_the_same_long_name_twice_is_archived_under_a_name_that_fits(boxes, fake_classifier):
    inbox, outbox = boxes
    name = "x" * 236 + ".png"  # x.<id>.png would be over NAME_MAX
    _old(write(inbox / name, digit_stroke()))
    drain(*boxes, fake_classifier)
    _old(write(inbox / name, digit_stroke()))
    _old(write(inbox / "after.png", digit_stroke()))
    drain(*boxes, fake_classifier)
    assert sorted(r["file"] for r in rows(outbox)) == sorted([name, name, "after.png"])
    archived = sorted(os.listdir(outbox / "processed"))
    assert len(archived) == 3 and name in archived and "after.png" in archived
    assert _nothing_claimed(inbox)


def test_a_refused_file_with_a_long_name_gets_an_error_record_that_fits(boxes, fake_classifier):
    inbox, outbox = boxes
    name = "n" * 246 + ".png"  # <name>.error.json would be over NAME_MAX
    (inbox / name).write_text("not an image")
    _old(inbox / name)
    drain(*boxes, fake_classifier)
    [record] = errors(outbox)
    assert record["file"] == name and record["kind"] == "not-an-image"
    [kept] = [p for p in (outbox / "failed").iterdir() if not p.name.endswith(".error.json")]
    assert kept.read_text() == "not an image" and (kept.parent / (kept.name + ".error.json")).exists()
    assert _nothing_claimed(inbox)


def test_recursive_with_a_file_where_the_archive_needs_a_folder(boxes, fake_classifier):
    inbox, outbox = boxes
    (outbox / "processed").mkdir(parents=True)
    (outbox / "processed" / "batch1").write_text("a file, not a folder")
    _old(write(inbox / "batch1" / "p.png", digit_stroke()))
    drain(*boxes, fake_classifier, recursive=True)
    assert [r["file"] for r in rows(outbox)] == ["batch1/p.png"]
    assert (outbox / "processed" / "batch1").read_text() == "a file, not a folder"
    assert len(os.listdir(outbox / "processed")) == 2
    assert _nothing_claimed(inbox)


def test_read_only_outbox_is_waited_out_not_a_crash(boxes, fake_classifier, faults):
    """The disk goes read-only: appends fail, and so does the repair in the retry handler."""
    inbox, outbox = boxes
    for i in range(12):
        _old(write(inbox / f"{i}.png", digit_stroke()))
    read_only = [False]

    def on_the_jsonl(path: str) -> bool:
        return read_only[0] and path.endswith("predictions.jsonl")

    daemon = Daemon(Settings(inbox=inbox, outbox=outbox, settle=0.2, batch_size=4, retry=0.01),
                    fake_classifier)
    read_only[0] = True
    faults.fail(os, "write", when=on_the_jsonl, error=OSError(errno.EROFS, "Read-only file system"))
    faults.fail(os, "fstat", when=on_the_jsonl, error=PermissionError(errno.EACCES, "Permission denied"))
    with running(daemon) as thread:
        assert wait_for(lambda: faults.failures >= 6, 10), "the faults never happened"
        assert thread.is_alive(), "the daemon died in its retry handler"
        read_only[0] = False
        assert wait_for(lambda: len(rows(outbox)) == 12 and daemon.idle(), 20)
    assert sorted(records_by_file(outbox)) == sorted(f"{i}.png" for i in range(12))
    assert _nothing_claimed(inbox)


def test_archive_on_another_file_system_is_whole_and_once(boxes, fake_classifier, other_file_system, faults):
    """A copy across file systems is made under a temporary name and renamed whole; a crash
    mid-copy leaves no torn file under the real name and no duplicate after the replay."""
    inbox, _ = boxes
    outbox = other_file_system / "outbox"
    big = write(inbox / "page.png", (digit_stroke(600) // 2))
    _old(big)
    os.mkfifo(inbox / "pipe.png")
    _old(inbox / "pipe.png")
    crash = OSError(errno.EIO, "the process dies mid-copy")
    faults.fail(os, "fsync", when=lambda path: path.endswith(".part"), error=crash)
    daemon = Daemon(Settings(inbox=inbox, outbox=outbox, once=True, settle=0.2), fake_classifier)
    daemon.start()
    with pytest.raises(OSError, match="mid-copy"):
        while daemon.step():
            pass
    daemon.close()
    faults.clear()
    assert not (outbox / "processed" / "page.png").exists(), "a torn copy under the real name"
    drain(inbox, outbox, fake_classifier)
    assert records_by_file(outbox) == {"page.png": "row", "pipe.png": "not-a-regular-file"}
    assert (outbox / "processed" / "page.png").read_bytes() == write(
        inbox.parent / "again.png", digit_stroke(600) // 2).read_bytes()
    assert os.listdir(outbox / "processed") == ["page.png"], "no duplicate, no temporary left"
    assert _nothing_claimed(inbox)




@pytest.mark.slow
def test_another_users_file_with_the_daemon_not_root(fake_classifier):
    """fs.protected_hardlinks refuses the archive's hard link to a file the daemon does not
    own (the shipped unit's User=worker): the file is copied instead, and nothing sticks."""
    ids = other_user_ids()
    if ids is None or os.geteuid() != 0:
        pytest.skip(f"needs root and the user {TEST_USER} (./scripts/test creates it)")
    root = Path(tempfile.mkdtemp(prefix="worker-hostile-", dir="/tmp"))
    inbox, outbox = root / "inbox", root / "outbox"
    inbox.mkdir()
    for folder in (root, inbox):
        os.chown(folder, *ids)
    write(inbox / "theirs.png", 255 - digit_stroke(100))  # owned by root, 0644
    (inbox / "bad.png").write_text("not an image")  # root's too: quarantined the same way
    mine = write(inbox / "mine.png", 255 - digit_stroke(100))
    os.chown(mine, *ids)
    result = subprocess.run(
        ["setpriv", f"--reuid={ids[0]}", f"--regid={ids[1]}", "--clear-groups",
         sys.executable, "-m", "worker", "watch", "--once", "--settle", "0", "--inbox", str(inbox),
         "--outbox", str(outbox)],
        capture_output=True, text=True, timeout=120, env={**os.environ, "HOME": str(root)},
    )
    assert result.returncode == 0, result.stderr
    assert records_by_file(outbox) == {"theirs.png": "row", "mine.png": "row", "bad.png": "not-an-image"}
    assert sorted(os.listdir(outbox / "processed")) == ["mine.png", "theirs.png"]
    assert _nothing_claimed(inbox)


def _bytes_name(folder: Path, name: bytes, data: bytes) -> None:
    fd = os.open(os.path.join(os.fsencode(folder), name), os.O_WRONLY | os.O_CREAT, 0o644)
    os.write(fd, data)
    os.close(fd)
    os.utime(os.path.join(os.fsencode(folder), name), (time.time() - 10, time.time() - 10))


def test_names_that_are_not_utf8_are_recorded_losslessly(boxes, fake_classifier):
    import base64

    inbox, outbox = boxes
    png = write(inbox.parent / "digit.png", digit_stroke()).read_bytes()
    _bytes_name(inbox, b"caf\xe9.png", png)  # Latin-1, as old SMB shares and scanners write
    _bytes_name(inbox, b"bad \xff\xfe.png", b"not an image")
    drain(*boxes, fake_classifier)
    assert records_by_file(outbox) == {"caf\\xe9.png": "row", "bad \\xff\\xfe.png": "not-an-image"}
    [line] = (outbox / "predictions.jsonl").read_text(encoding="utf-8").splitlines()
    assert base64.b64decode(json.loads(line)["file_bytes"]) == b"caf\xe9.png"
    [error] = errors(outbox)
    assert base64.b64decode(error["file_bytes"]) == b"bad \xff\xfe.png"
    assert error["message"].startswith("bad \\xff\\xfe.png")
    assert os.listdir(os.fsencode(outbox / "processed")) == [b"caf\xe9.png"], "archived by its own bytes"
    assert _nothing_claimed(inbox)


@pytest.mark.slow
def test_a_name_that_is_not_utf8_does_not_crash_watch_once(boxes):
    inbox, outbox = boxes
    _bytes_name(inbox, b"caf\xe9.png", write(inbox.parent / "d.png", 255 - digit_stroke(100)).read_bytes())
    result = subprocess.run([sys.executable, "-m", "worker", "watch", "--once", "--settle", "0",
                             "--inbox", str(inbox), "--outbox", str(outbox)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert [r["file"] for r in rows(outbox)] == ["caf\\xe9.png"]


def test_a_folder_swapped_in_for_a_tracked_file_is_never_taken_apart(boxes, fake_classifier):
    """The file is seen, then replaced by a folder with files in it before it is claimed."""
    inbox, outbox = boxes
    daemon = Daemon(Settings(inbox=inbox, outbox=outbox, once=True, settle=0.2), fake_classifier)
    _old(write(inbox / "y.png", digit_stroke()))
    daemon.start()
    daemon.intake.ready(time.time(), 0)  # y.png is tracked
    (inbox / "y.png").unlink()
    write(inbox / "y.png" / "sub" / "p1.png", digit_stroke())
    write(inbox / "y.png" / "p2.png", digit_stroke())
    while daemon.step():
        pass
    daemon.close()
    assert (inbox / "y.png" / "sub" / "p1.png").is_file() and (inbox / "y.png" / "p2.png").is_file()
    drain(*boxes, fake_classifier, recursive=True)
    assert records_by_file(outbox) == {"y.png/sub/p1.png": "row", "y.png/p2.png": "row"}
    assert len({r["id"] for r in rows(outbox)}) == 2


def test_a_folder_left_claimed_by_an_older_version_is_put_back_on_recovery(boxes, fake_classifier):
    inbox, outbox = boxes
    dead = inbox / ".work" / "deadbeefdeadbeef"
    write(dead / "0123456789abcdef01234=y.png" / "sub" / "p1.png", digit_stroke())
    drain(*boxes, fake_classifier)
    assert (inbox / "y.png" / "sub" / "p1.png").is_file(), "put back where it was, not deleted"
    assert records_by_file(outbox) == {}


def _die_holding(inbox: Path, *rels: str) -> None:
    """A worker process that claims ``rels`` (or adopts their claims) and is killed with them
    in hand."""
    code = (
        "import os, signal, sys; from worker.daemon.claims import Claims\n"
        "c = Claims(sys.argv[1]); c.recover(); [c.claim(rel) for rel in sys.argv[2:]]\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    done = subprocess.run([sys.executable, "-c", code, str(inbox), *rels])
    assert done.returncode == -9


def test_a_poison_file_is_set_aside_after_the_second_crash(boxes, fake_classifier):
    inbox, outbox = boxes
    _old(write(inbox / "poison.png", digit_stroke()))
    _old(write(inbox / "fine.png", digit_stroke()))
    _die_holding(inbox, "poison.png")
    _die_holding(inbox, "none-this-time.png")  # adopts poison.png, dies with it in hand again
    drain(*boxes, fake_classifier)
    assert records_by_file(outbox) == {"poison.png": "crashed", "fine.png": "row"}
    [error] = errors(outbox)
    assert "set aside" in error["message"]
    assert _nothing_claimed(inbox)


def test_one_crash_is_not_enough_to_set_a_file_aside(boxes, fake_classifier):
    inbox, outbox = boxes
    _old(write(inbox / "unlucky.png", digit_stroke()))
    _die_holding(inbox, "unlucky.png")
    drain(*boxes, fake_classifier)
    assert records_by_file(outbox) == {"unlucky.png": "row"}


@pytest.mark.slow
def test_a_deep_png_cannot_kill_the_daemon_under_a_1_gib_memory_limit(boxes):
    """7000x7000 16-bit RGBA of zeros: 381 KB on disk, 1.5 GB to decode and convert as it was.
    Under a 1 GiB address-space limit it is refused from its header; a big page still reads."""
    import resource

    import cv2

    inbox, outbox = boxes
    (inbox / "deep.png").write_bytes(cv2.imencode(".png", np.zeros((7000, 7000, 4), np.uint16))[1].tobytes())
    page = np.full((5000, 6000, 4), 255, np.uint8)  # 114 MiB decoded: allowed
    cv2.line(page, (3000, 1000), (3000, 4000), (0, 0, 0, 255), 300)
    (inbox / "page.png").write_bytes(cv2.imencode(".png", page)[1].tobytes())

    def one_gib() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (2**30, 2**30))

    result = subprocess.run([sys.executable, "-m", "worker", "watch", "--once", "--settle", "0",
                             "--inbox", str(inbox), "--outbox", str(outbox)],
                            capture_output=True, text=True, timeout=300, preexec_fn=one_gib)
    assert result.returncode == 0, result.stderr
    assert records_by_file(outbox) == {"deep.png": "too-large", "page.png": "row"}


def test_a_writer_pausing_longer_than_settle_is_not_cut_off(boxes, fake_classifier):
    """inotify saw the file opened for writing and not closed: it waits for the close."""
    inbox, outbox = boxes
    data = write(inbox.parent / "page.png", 255 - digit_stroke(200)).read_bytes()
    daemon = Daemon(Settings(inbox=inbox, outbox=outbox, settle=0.2), fake_classifier)
    with running(daemon):
        with open(inbox / "slow.png", "wb") as fh:
            fh.write(data[: len(data) // 2])
            fh.flush()
            time.sleep(1.0)  # the writer's pause: five times --settle
            fh.write(data[len(data) // 2 :])
        assert wait_for(lambda: (outbox / "predictions.csv").exists() and len(rows(outbox)) == 1, 10)
    assert records_by_file(outbox) == {"slow.png": "row"}
    assert (outbox / "processed" / "slow.png").read_bytes() == data


def test_a_truncated_file_growing_after_its_claim_is_put_back(boxes, fake_classifier, faults):
    """Found by a scan (no events) while its writer paused; the writer appends the rest just
    after the claimed half was read. The file goes back to the inbox and is read whole later."""
    inbox, outbox = boxes
    data = write(inbox.parent / "page.png", 255 - digit_stroke(200)).read_bytes()
    _old(_write_bytes(inbox / "paused.png", data[: len(data) // 2]))
    appended = []

    def writer_resumes(path: str) -> None:
        if not appended:
            appended.append(path)
            with open(path, "ab") as fh:
                fh.write(data[len(data) // 2 :])

    faults.before(os, "close", when=lambda path: "/.work/" in path and path.endswith("paused.png"),
                  action=writer_resumes)
    drain(*boxes, fake_classifier, settle_open=0.3)
    assert appended, "the writer never resumed"
    assert records_by_file(outbox) == {"paused.png": "row"}
    assert (outbox / "processed" / "paused.png").read_bytes() == data


def _write_bytes(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def test_a_file_renamed_in_is_ready_at_once_not_after_settle(boxes):
    """Written elsewhere, renamed in right away: watchdog calls it created, we call it moved."""
    from worker.daemon.watch import EVENT_FILTER, MOVED, InboxEvents, arrivals_observer

    inbox, _ = boxes
    events = InboxEvents(inbox, limit=100, recursive=False)
    observer = arrivals_observer()
    observer.schedule(events, str(inbox), event_filter=EVENT_FILTER)
    observer.start()
    try:
        staged = write(inbox.parent / "staged.png", digit_stroke())
        os.rename(staged, inbox / "moved.png")
        assert wait_for(lambda: not events.queue.empty(), 5)
    finally:
        observer.stop()
        observer.join()
    assert events.queue.get_nowait() == ("moved.png", MOVED)


def test_polling_an_idle_inbox_of_ignored_files_stats_none_of_them(boxes, fake_classifier, faults):
    """--poll on a share holding 20,000 ignored files: each poll lists names, stats nothing."""
    inbox, outbox = boxes
    for i in range(20_000):
        (inbox / f".hidden-{i}").touch()
    stats, listings = [], []
    faults.before(os, "stat", when=lambda path: path.startswith(str(inbox)), action=stats.append)
    faults.before(os, "lstat", when=lambda path: path.startswith(str(inbox)), action=stats.append)
    faults.before(os, "scandir", when=lambda path: path.startswith(str(inbox)), action=listings.append)
    daemon = Daemon(Settings(inbox=inbox, outbox=outbox, poll=0.05), fake_classifier)
    with running(daemon):
        assert wait_for(lambda: len(listings) >= 5, 10), "it did not poll"
        write(inbox / "new.png", digit_stroke())
        assert wait_for(lambda: (outbox / "predictions.csv").exists() and len(rows(outbox)) == 1, 10)
    assert len(stats) < 50, f"{len(stats)} stats over {len(listings)} polls"


def test_a_row_written_before_two_deaths_still_reaches_the_csv(boxes, fake_classifier, faults):
    """Killed between the JSONL and the CSV append, then killed again while replaying it: the
    file did nothing wrong, and the CSV must end listing it as the JSONL does."""
    from worker.daemon.claim import parse_token
    from worker.outbox.records import Row
    from worker.outbox.writer import Outbox

    inbox, outbox = boxes
    _old(write(inbox / "unlucky.png", digit_stroke()))
    _die_holding(inbox, "unlucky.png")
    _die_holding(inbox, "none.png")
    [claimed] = list((inbox / ".work").rglob("*unlucky.png"))
    claim_id, crashes = parse_token(claimed.name.split("=")[0])
    assert crashes == 1  # the second death is counted when the next daemon adopts it
    box = Outbox(outbox, fake_classifier.class_names)
    faults.fail(os, "write", when=lambda path: path.endswith("predictions.csv"),
                error=OSError(errno.EIO, "dies"))
    row = Row(id=claim_id, file="unlucky.png", label="1", confidence=0.9, class_index=1, sha256="",
              model="fake", processed_at="2026-01-01T00:00:00.000Z",
              probabilities=dict.fromkeys(fake_classifier.class_names, 0.1))
    with pytest.raises(OSError):
        box.record([row])
    faults.clear()
    box.close()
    drain(*boxes, fake_classifier)
    assert records_by_file(outbox) == {"unlucky.png": "row"}
    assert [r["id"] for r in rows(outbox)] == [claim_id]


def test_a_document_gives_a_row_per_page_with_ink_and_is_archived_once(boxes, fake_classifier):
    """A 3-page PDF whose second page is blank: rows for x.pdf#1 and x.pdf#3, the first with the
    claim's id and the other with the id and its page, and the file archived as it came."""
    from PIL import Image

    inbox, outbox = boxes
    digit = Image.fromarray(255 - np.kron(digit_stroke(), np.ones((10, 10), np.uint8)))
    digit.save(inbox / "forms.pdf", save_all=True, append_images=[Image.new("L", digit.size, 255), digit])
    _old(inbox / "forms.pdf")
    drain(*boxes, fake_classifier)
    found = rows(outbox)
    assert [r["file"] for r in found] == ["forms.pdf#1", "forms.pdf#3"]
    assert found[1]["id"] == f"{found[0]['id']}#3"
    jsonl = [json.loads(line) for line in (outbox / "predictions.jsonl").read_text().splitlines()]
    assert [r["page"] for r in jsonl] == [1, 3], "the JSONL names the page"
    assert (outbox / "processed" / "forms.pdf").is_file() and not errors(outbox)
    assert _nothing_claimed(inbox)


@pytest.fixture
def held_decoder(monkeypatch, tmp_path):
    """This process's sandbox, with children that decode the files named ``held_*`` only once
    the returned ``release()`` was called (until then, as a PDF bomb would, they hold their
    child); ``release()`` also gives the process its own sandbox back."""
    from worker.preprocess import sandbox

    hold = tmp_path / "hold"
    hold.touch()
    held = sandbox.Sandbox(child_main=(
        "import os, time; from worker.preprocess import loading; real = loading.decode_and_fit\n"
        "def held(data, name, *rest):\n"
        f"    while name.startswith('held_') and os.path.exists({str(hold)!r}): time.sleep(0.05)\n"
        "    return real(data, name, *rest)\n"
        "loading.decode_and_fit = held\n"
        "from worker.preprocess.sandbox_child import serve_child; serve_child()"))
    monkeypatch.setattr(sandbox, "shared", lambda: held)
    monkeypatch.setattr(sandbox, "close_shared", held.close)

    def release() -> None:
        hold.unlink(missing_ok=True)
        held.close()
        monkeypatch.undo()

    yield release
    release()


def _progressive_jpeg(path: Path) -> Path:
    from PIL import Image

    Image.fromarray(255 - cv2.resize(digit_stroke(), (200, 200))).save(path, progressive=True)
    return path


def _rows_while_held(inbox: Path, outbox: Path, held: list[str], classifier, **settings) -> None:
    """A daemon with ``held`` files stuck decoding: 30 files dropped meanwhile get their rows,
    and at the stop the held ones go back to the inbox unrecorded."""
    daemon = Daemon(Settings(inbox=inbox, outbox=outbox, settle=0.1, **settings), classifier)
    with running(daemon):
        assert wait_for(lambda: not any((inbox / name).exists() for name in held), 10), "claimed"
        for i in range(30):
            write(inbox / f"{i:02d}.png", digit_stroke())
        assert wait_for(lambda: (outbox / "predictions.csv").exists() and len(rows(outbox)) == 30, 20)
    assert all((inbox / name).is_file() for name in held) and _nothing_claimed(inbox), "put back"
    assert not set(held) & set(records_by_file(outbox))


def test_a_slow_decode_holds_up_neither_other_files_nor_the_stop(boxes, fake_classifier, held_decoder):
    """A document (or a big file) is decoded in the slow lane, in the sandbox: while one is
    stuck decoding, the other files get their rows, and a stop does not wait for it: it goes
    back to the inbox unrecorded, and the next start gives it its row."""
    inbox, outbox = boxes
    write(inbox / "held_slow.tif", digit_stroke())
    _rows_while_held(inbox, outbox, ["held_slow.tif"], fake_classifier)
    held_decoder()
    drain(*boxes, fake_classifier)
    assert records_by_file(outbox)["held_slow.tif"] == "row"
    assert len(records_by_file(outbox)) == 31


def test_a_progressive_jpeg_found_out_by_reading_goes_to_the_slow_lane(boxes, fake_classifier, held_decoder):
    """Its first bytes say JPEG like any other: only its header, read on the loop, says it is
    for the sandbox. The loop hands it to the slow lane instead of waiting for the sandbox."""
    inbox, outbox = boxes
    _progressive_jpeg(inbox / "held_photo.jpg")
    _rows_while_held(inbox, outbox, ["held_photo.jpg"], fake_classifier)


def test_claims_left_by_a_crash_are_decoded_beside_the_loop(boxes, fake_classifier, held_decoder):
    """A dead daemon's claims of files for the sandbox are replayed in the slow lane, not on
    the loop: new files get their rows meanwhile, and the stop does not wait for them."""
    inbox, outbox = boxes
    _old(write(inbox / "held_scan.tif", digit_stroke()))
    _old(_progressive_jpeg(inbox / "held_photo.jpg"))
    _die_holding(inbox, "held_scan.tif", "held_photo.jpg")
    _rows_while_held(inbox, outbox, ["held_scan.tif", "held_photo.jpg"], fake_classifier)
    held_decoder()
    drain(*boxes, fake_classifier)
    assert records_by_file(outbox)["held_scan.tif"] == records_by_file(outbox)["held_photo.jpg"] == "row"


def test_a_file_bigger_than_the_outbox_file_system_is_its_trouble(boxes, fake_classifier, other_file_system):
    """A 2 GB sparse file, refused (too large), cannot be copied to a 64 MB outbox on another
    file system: it is kept on the inbox's, its error record saying where, and the daemon goes
    on; a real full disk is still waited out (the file fits the file system, not its free space)."""
    inbox, _ = boxes
    outbox = other_file_system / "outbox"
    with open(inbox / "huge.png", "wb") as fh:
        fh.truncate(2 << 30)
    _old(inbox / "huge.png")
    _old(write(inbox / "after.png", digit_stroke()))
    drain(inbox, outbox, fake_classifier)
    assert records_by_file(outbox) == {"huge.png": "too-large", "after.png": "row"}
    (record,) = errors(outbox)
    kept = Path(record["kept_at"])
    assert kept.parent == inbox / ".too-big" and kept.stat().st_size == 2 << 30
    assert _nothing_claimed(inbox) and not (outbox / "failed" / "huge.png").exists()
