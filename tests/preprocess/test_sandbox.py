"""Decoding with a budget: what its header cannot bound is decoded in a child process with a
memory and a time limit, chosen by the bytes (never the name), and whatever the child does
(crash, hang, lie) costs one file an error record, never the daemon."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import errors, rows
from documents import huge_image_pdf, nested_forms_pdf, text_pdf, tiny_pages_tiff
from factories import digit_stroke, wait_for, write
from watching import Watcher, assert_exactly_once

from worker import defaults
from worker.daemon.claim import Claim
from worker.daemon.slow_lane import is_slow
from worker.errors import InputError
from worker.preprocess import DIGITS, Limits, load_bytes, load_input, load_many
from worker.preprocess.headers import tiff_pages
from worker.preprocess.loading import DEFERRED
from worker.preprocess.reading import decode_page
from worker.preprocess.sandbox import Sandbox
from worker.report.thumbnails import page_of


def _refusal(path: Path, **limits) -> InputError:
    with pytest.raises(InputError) as caught:
        load_input(path, limits=Limits(**limits))
    return caught.value


def test_text_pdfs_loaded_on_many_threads_at_once_all_read(tmp_path):
    """PDFium is not thread-safe: text PDFs rendered on several threads of one process crashed
    it. Each is rendered in a child of its own now, whatever the threads."""
    documents = [text_pdf(3, str(i % 10)) for i in range(12)]
    with ThreadPoolExecutor(6) as pool:
        loaded = list(pool.map(lambda d: load_bytes(d, DIGITS, name="doc.pdf"), documents))
    assert all([number for number, _ in item.pages] == [1, 2, 3] for item in loaded)


def test_thumbnails_of_archived_pdfs_made_on_many_threads_are_the_pages(tmp_path):
    """The web page makes thumbnails of archived inputs on uvicorn's threads: a document's page
    comes from the sandbox, the same grey as decoding it here."""
    path = tmp_path / "doc.pdf"
    path.write_bytes(text_pdf(3))
    with ThreadPoolExecutor(4) as pool:
        greys = list(pool.map(lambda page: page_of(path, page), [1, 2, 3, 2] * 3))
    expected = decode_page(path.read_bytes(), "doc.pdf", 2)
    assert greys[1].dtype == np.uint8 and np.array_equal(greys[1], expected)
    assert not np.array_equal(greys[0], greys[1]), "each page its own"


def test_a_pdf_named_png_is_decoded_in_the_sandbox_and_its_time_is_bounded(tmp_path):
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(nested_forms_pdf())
    started = time.monotonic()
    error = _refusal(bomb, decode_seconds=1.5)
    assert error.kind == "too-slow", error.message
    assert time.monotonic() - started < 30, "the child was not stopped at its deadline"
    write(tmp_path / "after.png", 255 - digit_stroke(100))
    assert load_input(tmp_path / "after.png").pixels.shape == (28, 28, 1)


def test_a_pdf_holding_a_huge_image_is_too_large_before_it_is_decoded(tmp_path):
    (tmp_path / "huge.pdf").write_bytes(huge_image_pdf(1500))
    error = _refusal(tmp_path / "huge.pdf", max_pixels=1_000_000)
    assert error.kind == "too-large" and "1500x1500" in error.message


def test_the_memory_cap_makes_a_big_image_too_large_not_a_crash(tmp_path):
    page = np.full((3000, 3000, 3), 255, np.uint8)
    page[::5] = np.random.default_rng(0).integers(0, 255, page[::5].shape, dtype=np.uint8)
    path = write(tmp_path / "big.png", page)
    assert path.stat().st_size >= 4 * 1024 * 1024  # big enough for the sandbox
    assert _refusal(path, decode_memory=16 * 2**20).kind == "too-large"


@pytest.mark.parametrize("prefix", [b"II*\x00", b"II\x00*"])
def test_a_tiff_of_countless_pages_is_refused_before_its_pages_are_walked(tmp_path, prefix):
    data = prefix + tiny_pages_tiff(20_000)[4:]
    assert tiff_pages(data, 201) == 201  # the count stops at the limit
    (tmp_path / "pages.png").write_bytes(data)
    assert _refusal(tmp_path / "pages.png", max_pages=200).kind == "too-many-pages"


@pytest.mark.parametrize(("name", "data", "slow"), [
    ("doc.png", text_pdf(1), True),  # the bytes say PDF, whatever the name
    ("fax.jpg", tiny_pages_tiff(3), True),
    ("odd.png", b"II\x00*" + tiny_pages_tiff(3)[4:], True),  # a TIFF prefix Pillow takes too
    ("scan.pdf", cv2.imencode(".png", digit_stroke())[1].tobytes(), False),
])
def test_the_slow_lane_is_chosen_by_the_bytes_never_the_name(tmp_path, name, data, slow):
    """The daemon's loop reads a file, and hands it to the slow lane (DEFERRED) when its bytes
    are for the sandbox."""
    path = tmp_path / name
    path.write_bytes(data)
    [loaded] = load_many([path], DIGITS, names=[name], defer_unbounded=True)
    assert (isinstance(loaded, InputError) and loaded.kind == DEFERRED) is slow
    big = Claim(id="c", rel="big.png", path=path, size=defaults.SANDBOX_BYTES)
    assert is_slow(big), "one this big goes to the lane before it is read"


# A child that misbehaves in each way a decoder taken over by a file could: the parent must
# give that file an error and go on with a fresh child.
CRASHING = "import os, signal, sys; sys.stdin.buffer.read(12); os.kill(os.getpid(), signal.SIGSEGV)"
HANGING = "import sys, time; sys.stdin.buffer.read(12); time.sleep(60)"
ANSWER = ("import json, struct, sys; sys.stdin.buffer.read(12); head = json.dumps({header}).encode(); "
          "sys.stdout.buffer.write(struct.pack('<I', len(head)) + head + {body}); sys.stdout.flush(); "
          "sys.stdin.read()")
LYING = ANSWER.format(header="{'ok': True, 'pages': None}", body="b'\\x00\\x00\\xc0\\x7f' * 784")  # NaNs
FORGING = ANSWER.format(header="{'ok': False, 'kind': '../x', 'message': 'hi'}", body="b''")
ASKED_ELSE = ANSWER.format(header="{'ok': True, 'grey': [28, 28]}", body="b'\\x00' * 784")  # a page


@pytest.mark.parametrize(("child", "kind"), [
    (CRASHING, "crashed"), (HANGING, "too-slow"), (LYING, "crashed"), (FORGING, "crashed"),
    (ASKED_ELSE, "crashed"),
])
def test_whatever_the_child_does_costs_one_file_an_error(child, kind):
    sandbox = Sandbox(1, child_main=child)
    try:
        for _ in range(2):  # and again with the child that replaced it
            with pytest.raises(InputError) as caught:
                sandbox.load(b"%PDF-1.4", "x.pdf", DIGITS, Limits(decode_seconds=1))
            assert caught.value.kind == kind, caught.value.message
    finally:
        sandbox.close()


def test_a_child_that_says_more_than_it_was_asked_is_replaced():
    """Two answers to one question: the second is never taken for the next file's."""
    twice = ("import json, os, struct, sys\n"
             "while len(sys.stdin.buffer.read(12)) == 12:\n"
             "    head = json.dumps({'ok': False, 'kind': 'no-ink', 'message': str(os.getpid())}).encode()\n"
             "    sys.stdout.buffer.write((struct.pack('<I', len(head)) + head) * 2); sys.stdout.flush()\n")
    sandbox = Sandbox(1, child_main=twice)
    children = set()
    try:
        for _ in range(3):
            with pytest.raises(InputError) as caught:
                sandbox.load(b"%PDF-1.4", "x.pdf", DIGITS, Limits(decode_seconds=5))
            children.add(caught.value.message)
    finally:
        sandbox.close()
    assert len(children) == 3, "each file answered by a child of its own"


def test_a_decoder_that_cannot_start_is_said_plainly(monkeypatch):
    monkeypatch.setattr(sys, "executable", "/nonexistent/python")
    sandbox = Sandbox(1)
    with pytest.raises(InputError, match="cannot start the decoder process") as caught:
        sandbox.load(b"%PDF-1.4", "x.pdf", DIGITS, Limits())
    assert caught.value.kind == "internal"
    sandbox.close()


def test_documents_are_read_under_a_hard_address_space_limit(tmp_path):
    """A unit's LimitAS= (or ulimit -v) sets a hard limit the child may not raise: it caps
    itself below it instead of failing every document."""
    (tmp_path / "doc.pdf").write_bytes(text_pdf(2))
    code = ("import sys; from pathlib import Path; from worker.preprocess import load_input; "
            "print(len(load_input(Path(sys.argv[1])).pages))")
    result = subprocess.run(["prlimit", "--as=8000000000:8000000000", sys.executable, "-c", code,
                             str(tmp_path / "doc.pdf")], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout.strip() == "2", result.stderr[-2000:]


def test_close_ends_a_decode_in_progress_at_once():
    sandbox = Sandbox(1, child_main=HANGING)
    outcome: list[InputError] = []

    def load() -> None:
        try:
            sandbox.load(b"%PDF-1.4", "x.pdf", DIGITS, Limits(decode_seconds=60))
        except InputError as exc:
            outcome.append(exc)

    thread = threading.Thread(target=load)
    thread.start()
    time.sleep(0.5)
    sandbox.close()
    thread.join(10)
    assert not thread.is_alive() and outcome and outcome[0].kind == "crashed"


@pytest.mark.slow
def test_forty_text_pdfs_three_runs_in_a_row(tmp_path):
    """Office documents dropped at once: `watch --once` segfaulted (PDFium on several threads)."""
    for run in range(3):
        inbox, outbox = tmp_path / f"in{run}", tmp_path / f"out{run}"
        inbox.mkdir()
        for i in range(40):
            (inbox / f"doc{i}.pdf").write_bytes(text_pdf(6, str(i % 10)))
        result = subprocess.run(
            [sys.executable, "-m", "worker", "watch", "--once", "--settle", "0", "--inbox", str(inbox),
             "--outbox", str(outbox)], capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, result.stderr[-3000:]
        found = rows(outbox)
        assert len(found) == 240 and not errors(outbox)
        assert {r["file"] for r in found} == {f"doc{i}.pdf#{p}" for i in range(40) for p in range(1, 7)}


@pytest.mark.slow
def test_a_bomb_holds_neither_the_other_files_nor_the_stop(tmp_path):
    """A 3 KB PDF named .png renders for minutes: a digit dropped after it gets its row while
    the bomb is still decoding, the bomb ends as too-slow, and a SIGTERM during a decode exits
    0 without waiting for it."""
    inbox, outbox = tmp_path / "inbox", tmp_path / "outbox"
    inbox.mkdir()
    watcher = Watcher(inbox, outbox, "--decode-timeout", "8")
    watcher.wait_ready()
    (inbox / "bomb.png").write_bytes(nested_forms_pdf())
    dropped = time.monotonic()
    write(inbox / "after.png", 255 - digit_stroke(100))
    assert wait_for(lambda: len(rows(outbox)) == 1, 60), watcher.output()
    assert not errors(outbox), "the digit waited for the bomb"
    assert wait_for(lambda: errors(outbox), 60), watcher.output()
    print(f"bomb refused after {time.monotonic() - dropped:.1f} s")
    assert [e["kind"] for e in errors(outbox)] == ["too-slow"]
    assert_exactly_once(outbox, {"bomb.png", "after.png"})

    (inbox / "bomb2.png").write_bytes(nested_forms_pdf())
    assert wait_for(lambda: "bomb2.png" not in {p.name for p in inbox.iterdir()}, 30)
    time.sleep(1)  # the lane has it, in the child
    stopped = time.monotonic()
    assert watcher.stop(signal.SIGTERM, timeout=30) == 0, watcher.output()
    took = time.monotonic() - stopped
    print(f"stopped {took:.1f} s after SIGTERM")
    assert took < 8, "the stop waited for the decode"
    assert json.dumps(errors(outbox)).count("bomb2") == 0  # put back, for the next start
    assert (inbox / "bomb2.png").exists()


@pytest.mark.slow
def test_the_sandbox_works_for_a_daemon_that_is_not_root(tmp_path):
    """The shipped unit runs the daemon as its own user: the decoder children it starts get the
    same user and budget, and a bomb dropped by another user (root here) costs one record."""
    import pwd
    import sysconfig

    from conftest import REPO, TEST_USER, other_user_ids

    ids = other_user_ids()
    python = Path(f"/usr/bin/python{sys.version_info[0]}.{sys.version_info[1]}")
    if ids is None or os.geteuid() != 0 or not python.is_file():
        pytest.skip(f"needs root, the user {TEST_USER} and {python} (an interpreter it may run)")
    root = Path(tempfile.mkdtemp(prefix="worker-sandbox-", dir="/tmp"))
    try:
        os.chmod(root, 0o755)
        inbox, outbox = root / "inbox", root / "outbox"
        for folder in (inbox, outbox):
            folder.mkdir()
            os.chown(folder, *ids)
        (inbox / "doc.pdf").write_bytes(text_pdf(2))  # root's files, 0644
        (inbox / "bomb.png").write_bytes(nested_forms_pdf())
        env = {**os.environ, "HOME": str(root),
               "PYTHONPATH": os.pathsep.join([sysconfig.get_paths()["purelib"], str(REPO)])}
        result = subprocess.run(
            ["setpriv", f"--reuid={ids[0]}", f"--regid={ids[1]}", "--clear-groups", str(python), "-m",
             "worker", "watch", "--once", "--settle", "0", "--decode-timeout", "5", "--inbox", str(inbox),
             "--outbox", str(outbox)], capture_output=True, text=True, timeout=300, env=env)
        assert result.returncode == 0, result.stderr[-3000:]
        assert sorted(r["file"] for r in rows(outbox)) == ["doc.pdf#1", "doc.pdf#2"], result.stderr[-3000:]
        assert [e["kind"] for e in errors(outbox)] == ["too-slow"]
        left = subprocess.run(["pgrep", "-u", pwd.getpwuid(ids[0]).pw_name], capture_output=True, text=True)
        assert not left.stdout.strip(), "a decoder child outlived its daemon"
    finally:
        shutil.rmtree(root, ignore_errors=True)
