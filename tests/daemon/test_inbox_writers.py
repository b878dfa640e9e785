"""A writer of the inbox is untrusted: whatever it plants in ``.work``, however it swaps folders
for symlinks, the daemon writes and moves nothing outside the inbox and the outbox. The tests
that matter most run the daemon as a user of its own (``worker-test``, the shipped unit's
``User=``) against files and folders made by root, as a scanner account would make them."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from conftest import TEST_USER, errors, other_user_ids, rows
from factories import digit_stroke, write
from typer.testing import CliRunner

from worker.cli import app
from worker.daemon.claims import Claims
from worker.daemon.loop import Daemon
from worker.daemon.settings import Settings
from worker.daemon.work_folder import WORK_DIR

PATH_MAX = 4096


def _tree(root: Path, *, skip: tuple[Path, ...]) -> dict[str, tuple]:
    """Every path under ``root`` but those under ``skip``: its kind, size and inode."""
    seen = {}
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if Path(folder, d) not in skip]
        for name in dirs + files:
            info = os.lstat(os.path.join(folder, name))
            seen[os.path.join(folder, name)] = (info.st_mode, info.st_size, info.st_ino)
    return seen


def _drain(inbox: Path, outbox: Path, classifier, **options) -> None:
    settings = Settings(inbox=inbox, outbox=outbox, once=True, settle=0, **options)
    Daemon(settings, classifier).run(threading.Event())


def _records(outbox: Path) -> list[str]:
    if not (outbox / "predictions.csv").exists():
        return []
    return sorted([r["file"] for r in rows(outbox)] + [e["file"] for e in errors(outbox)])


def _outside(tmp_path: Path) -> Path:
    """A folder beside the inbox with a file in it: what a writer would like the daemon to touch."""
    outside = tmp_path / "outside"
    write(outside / "keep.png", digit_stroke())
    return outside


def _planted_work(inbox: Path, tmp_path: Path) -> None:
    """What a writer plants: a dead daemon's folder (no lock) with claims naming paths outside
    the inbox, a stray file, and a symlink to a folder outside."""
    dead = inbox / WORK_DIR / "deadbeefdeadbeef0000"
    png = write(tmp_path / "digit.png", digit_stroke()).read_bytes()
    dead.mkdir(parents=True)
    (dead / "0123456789abcdef0123=..%2F..%2Foutside%2Fx.png").write_bytes(png)
    absolute = str(tmp_path / "abs" / "y.png").replace("/", "%2F")
    (dead / f"0123456789abcdef0124={absolute}").write_bytes(png)
    (dead / "stray.png").write_bytes(png)  # no "=": crashed every start
    os.symlink(tmp_path / "outside", inbox / WORK_DIR / "zz")


def test_planted_claims_never_reach_outside_and_end_as_records(boxes, fake_classifier, tmp_path):
    inbox, outbox = boxes
    outside = _outside(tmp_path)
    _planted_work(inbox, tmp_path)
    before = _tree(tmp_path, skip=(inbox, outbox))
    _drain(inbox, outbox, fake_classifier)
    _drain(inbox, outbox, fake_classifier)  # a second start: nothing crashes, nothing repeats
    assert _tree(tmp_path, skip=(inbox, outbox)) == before, "nothing written or moved outside"
    assert not (outside / "x.png").exists() and not (tmp_path / "abs").exists()
    assert (outside / "keep.png").is_file()
    recorded = _records(outbox)  # each put back into the inbox as a plain drop, the symlink refused
    assert len(recorded) == 4 and {"stray.png", "zz"} <= set(recorded), recorded
    assert all("/" not in name and not name.startswith(".") for name in recorded), recorded


def test_a_folder_swapped_for_a_symlink_before_the_claim(boxes, fake_classifier, tmp_path):
    """--recursive: ``sub/x.png`` is seen, then ``sub`` becomes a symlink to a folder outside
    holding an ``x.png`` of its own: the claim must not go through it."""
    inbox, outbox = boxes
    outside = _outside(tmp_path)
    write(outside / "x.png", digit_stroke())
    write(inbox / "sub" / "x.png", digit_stroke())
    before = _tree(tmp_path, skip=(inbox, outbox))
    settings = Settings(inbox=inbox, outbox=outbox, once=True, settle=0, recursive=True)
    daemon = Daemon(settings, fake_classifier)
    daemon.start()
    daemon.intake.ready(time.time(), 0)  # sub/x.png is tracked
    os.rename(inbox / "sub", inbox / ".moved")
    os.symlink(outside, inbox / "sub")
    while daemon.step():
        pass
    daemon.pipeline.finish_pending()
    daemon.close()
    assert _tree(tmp_path, skip=(inbox, outbox)) == before, "nothing outside moved into the daemon's folders"
    assert (outside / "x.png").is_file()


def test_a_put_back_never_goes_through_a_symlink(tmp_path):
    inbox = tmp_path / "inbox"
    write(inbox / "sub" / "x.png", digit_stroke())
    outside = _outside(tmp_path)
    claims = Claims(inbox)
    claim = claims.claim("sub/x.png")
    assert claim is not None
    os.rename(inbox / "sub", inbox / ".moved")
    os.symlink(outside, inbox / "sub")
    assert not claims.put_back(claim)
    assert sorted(os.listdir(outside)) == ["keep.png"]
    assert claim.path.is_file(), "it stays claimed, for the daemon to finish"
    claims.close()


def test_work_renamed_away_and_replaced_under_a_running_daemon(tmp_path):
    """A writer renames the daemon's ``.work`` away and plants its own, whose folder for the
    daemon is a symlink outside: the daemon's claims are still found, nothing outside is touched."""
    inbox = tmp_path / "inbox"
    write(inbox / "x.png", digit_stroke())
    outside = _outside(tmp_path)
    claims = Claims(inbox)
    claim = claims.claim("x.png")
    os.rename(inbox / WORK_DIR, inbox / "taken")
    (inbox / WORK_DIR).mkdir()
    os.symlink(outside, inbox / WORK_DIR / claims.owner)
    [recovered] = claims.recover()
    assert (recovered.id, recovered.rel) == (claim.id, "x.png")
    assert recovered.path.is_file() and not (inbox / WORK_DIR).is_symlink()
    assert not (inbox / WORK_DIR / claims.owner).is_symlink()
    assert sorted(os.listdir(outside)) == ["keep.png"]
    recovered.path.unlink()
    claims.finish(recovered)
    claims.close()


def test_a_work_folder_writable_by_others_is_set_aside(tmp_path):
    inbox = tmp_path / "inbox"
    (inbox / WORK_DIR).mkdir(parents=True)
    os.chmod(inbox / WORK_DIR, 0o777)
    (inbox / WORK_DIR / "planted").mkdir()
    claims = Claims(inbox)
    info = os.lstat(inbox / WORK_DIR)
    assert info.st_mode & 0o022 == 0
    assert sorted(os.listdir(inbox / WORK_DIR)) == sorted([f"{claims.owner}.lock", claims.owner])
    [aside] = [p for p in inbox.iterdir() if p.name.startswith(f"{WORK_DIR}.set-aside")]
    assert (aside / "planted").is_dir()
    claims.close()


def test_a_symlink_as_work_is_set_aside(tmp_path):
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    outside = _outside(tmp_path)
    os.symlink(outside, inbox / WORK_DIR)
    claims = Claims(inbox)
    assert not (inbox / WORK_DIR).is_symlink()
    assert sorted(os.listdir(outside)) == ["keep.png"]
    claims.close()


@pytest.mark.parametrize("where", ["processed", "failed", "", "link"])
def test_the_inbox_inside_the_outbox_is_a_configuration_error(tmp_path, where):
    outbox = tmp_path / "outbox"
    inbox = outbox / where if where != "link" else tmp_path / "link"
    inbox.mkdir(parents=True, exist_ok=True)
    if where == "link":
        inbox.rmdir()
        (outbox / "processed").mkdir(parents=True)
        os.symlink(outbox / "processed", inbox)
    result = CliRunner().invoke(app, ["watch", "--once", "--inbox", str(inbox), "--outbox", str(outbox)])
    assert result.exit_code == 78, result.output
    assert "inside the outbox" in result.output or "same folder" in result.output, result.output
    assert len([line for line in result.output.splitlines() if "error" in line]) == 1, result.output


def _deep_folder(inbox: Path, depth: int) -> tuple[int, str]:
    """Folders below the inbox, made by directory fds: a path longer than PATH_MAX."""
    fd = os.open(inbox, os.O_RDONLY | os.O_DIRECTORY)
    parts = []
    for level in range(depth):
        name = f"{level:03d}" + "d" * 200
        os.mkdir(name, dir_fd=fd)
        child = os.open(name, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
        os.close(fd)
        fd = child
        parts.append(name)
    return fd, "/".join(parts)


def test_a_path_over_path_max_ends_as_exactly_one_record(boxes, fake_classifier, tmp_path):
    inbox, outbox = boxes
    fd, deep = _deep_folder(inbox, 22)
    png = write(tmp_path / "digit.png", digit_stroke()).read_bytes()
    file = os.open("deep.png", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd)
    os.write(file, png)
    os.close(file)
    os.close(fd)
    assert len(os.fsencode(f"{inbox}/{deep}/deep.png")) > PATH_MAX
    write(inbox / "plain.png", digit_stroke())
    _drain(inbox, outbox, fake_classifier, recursive=True)
    recorded = _records(outbox)
    assert sorted(recorded) == sorted(["plain.png", f"{deep}/deep.png"]), [r[-40:] for r in recorded]


def _as_test_user(inbox: Path, outbox: Path, root: Path) -> subprocess.CompletedProcess:
    ids = other_user_ids()
    return subprocess.run(
        ["setpriv", f"--reuid={ids[0]}", f"--regid={ids[1]}", "--clear-groups",
         sys.executable, "-m", "worker", "watch", "--once", "--settle", "0", "--inbox", str(inbox),
         "--outbox", str(outbox)],
        capture_output=True, text=True, timeout=120, env={**os.environ, "HOME": str(root)},
    )


@pytest.fixture
def foreign_boxes():
    """An inbox owned by the daemon's user (as the shipped unit has it), in a folder that user
    may not write: anything outside the inbox and outbox a daemon touched would be a root's."""
    ids = other_user_ids()
    if ids is None or os.geteuid() != 0:
        pytest.skip(f"needs root and the user {TEST_USER} (./scripts/test creates it)")
    import tempfile

    root = Path(tempfile.mkdtemp(prefix="worker-writers-", dir="/tmp"))
    os.chmod(root, 0o755)
    inbox, outbox = root / "inbox", root / "outbox"
    inbox.mkdir()
    outbox.mkdir()
    for folder in (inbox, outbox):
        os.chown(folder, *ids)
    yield root, inbox, outbox
    shutil.rmtree(root)


@pytest.mark.slow
def test_a_work_folder_planted_by_another_user_is_set_aside(foreign_boxes):
    root, inbox, outbox = foreign_boxes
    outside = _outside(root)
    os.chmod(outside, 0o777)  # a folder the daemon could write to, were it led there
    _planted_work(inbox, root)
    write(inbox / "fine.png", 255 - digit_stroke(100))
    before = _tree(root, skip=(inbox, outbox))
    result = _as_test_user(inbox, outbox, root)
    assert result.returncode == 0, result.stderr
    assert _tree(root, skip=(inbox, outbox)) == before, "nothing written or moved outside"
    assert os.lstat(inbox / WORK_DIR).st_uid == other_user_ids()[0], "a fresh .work of the daemon's own"
    assert [p.name for p in inbox.iterdir() if p.name.startswith(f"{WORK_DIR}.set-aside")]
    assert "set aside" in result.stderr
    assert _records(outbox) == ["fine.png"]


@pytest.mark.slow
def test_a_work_folder_renamed_away_by_another_user_is_replaced(foreign_boxes):
    """The daemon's own ``.work`` (with a dead daemon's claim in it) was renamed away by a writer,
    who planted one of its own: the planted one is set aside, never acted on."""
    root, inbox, outbox = foreign_boxes
    ids = other_user_ids()
    outside = _outside(root)
    os.chmod(outside, 0o777)
    (inbox / WORK_DIR).mkdir()
    os.symlink(outside, inbox / WORK_DIR / "deadbeefdeadbeef0000")  # "a dead daemon's folder"
    write(inbox / "fine.png", 255 - digit_stroke(100))
    os.chown(inbox / "fine.png", *ids)
    before = _tree(root, skip=(inbox, outbox))
    result = _as_test_user(inbox, outbox, root)
    assert result.returncode == 0, result.stderr
    assert _tree(root, skip=(inbox, outbox)) == before
    assert _records(outbox) == ["fine.png"]
