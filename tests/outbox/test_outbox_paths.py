"""The outbox is the daemon's: what it archives or quarantines is written under folders it
opened itself, never through a symlink, whatever names an inbox writer chose (issue 22, 2)."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from conftest import TEST_USER, drain, errors, other_user_ids, records_by_file
from factories import digit_stroke, write

from worker.archive import Folder, place
from worker.errors import ConfigError


def _old(path: Path) -> Path:
    os.utime(path, (time.time() - 10, time.time() - 10), follow_symlinks=False)
    return path






def _everything_under(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def _files_under(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file() and not p.is_symlink()]


def test_place_never_goes_through_a_symlinked_middle_folder(tmp_path):
    """``sub`` (and ``a/sub``) in the archive are symlinks to a folder elsewhere: the file goes
    to its top-level name instead, and nothing is written where the links point."""
    outside, archive = tmp_path / "outside", tmp_path / "archive"
    outside.mkdir()
    (archive / "a").mkdir(parents=True)
    (archive / "sub").symlink_to(outside)
    (archive / "a" / "sub").symlink_to(outside)
    src = tmp_path / "s.png"
    src.write_bytes(b"1")
    assert place(src, archive, "sub/x.png", "c1") == archive / "c1.png"
    assert place(src, archive, "a/sub/deeper/x.png", "c2") == archive / "c2.png"
    assert _everything_under(outside) == []
    assert (archive / "sub").is_symlink() and (archive / "a" / "sub").is_symlink()
    assert place(src, archive, "sub/x.png", "c1") == archive / "c1.png", "a replay finds it again"


def test_place_never_follows_a_symlink_at_the_final_name(tmp_path):
    """A symlink where the file would go is a name taken, not a way out."""
    outside, archive = tmp_path / "outside", tmp_path / "archive"
    outside.mkdir()
    archive.mkdir()
    (archive / "x.png").symlink_to(outside / "x.png")
    src = tmp_path / "s.png"
    src.write_bytes(b"1")
    assert place(src, archive, "x.png", "c1") == archive / "x.c1.png"
    assert _everything_under(outside) == []


def test_place_refuses_names_that_climb_out(tmp_path):
    """A relative path with ``..`` or an absolute one (a claim name made up by a writer) lands
    at the top of the archive, under the claim's own name."""
    archive = tmp_path / "deep" / "archive"
    src = tmp_path / "s.png"
    src.write_bytes(b"1")
    assert place(src, archive, "../../escaped.png", "c1") == archive / "c1.png"
    assert place(src, archive, str(tmp_path / "abs.png"), "c2") == archive / "c2.png"
    assert sorted(os.listdir(tmp_path)) == ["deep", "s.png"]


def test_a_held_folder_removed_under_the_daemon_is_made_again(tmp_path):
    """Someone deletes ``processed/`` while the daemon holds it open: the next file is placed
    in a new one at the same path, as before the folder was held."""
    archive = Folder(tmp_path / "processed")
    shutil.rmtree(tmp_path / "processed")
    src = tmp_path / "s.png"
    src.write_bytes(b"1")
    assert place(src, archive, "sub/x.png", "c1") == tmp_path / "processed" / "sub" / "x.png"
    assert (tmp_path / "processed" / "sub" / "x.png").read_bytes() == b"1"
    archive.close()


@pytest.mark.parametrize("box", ["processed", "failed"])
def test_a_symlink_planted_in_the_outbox_is_not_followed(tmp_path, fake_classifier, box):
    """Someone put ``outbox/processed/sub`` (or ``failed/sub``) as a symlink to another folder:
    ``sub/*.png`` from the inbox are archived and quarantined inside the outbox all the same."""
    inbox, outbox, outside = tmp_path / "inbox", tmp_path / "outbox", tmp_path / "outside"
    for folder in (inbox / "sub", outbox / box, outside):
        folder.mkdir(parents=True)
    (outbox / box / "sub").symlink_to(outside)
    _old(write(inbox / "sub" / "digit.png", digit_stroke()))
    (inbox / "sub" / "bad.png").write_text("not an image")
    _old(inbox / "sub" / "bad.png")
    drain(inbox, outbox, fake_classifier, recursive=True)
    assert _everything_under(outside) == []
    assert (outbox / box / "sub").is_symlink()
    assert records_by_file(outbox) == {"sub/digit.png": "row", "sub/bad.png": "not-an-image"}
    assert len(_files_under(outbox / "processed")) == 1
    [kept, record] = sorted(_files_under(outbox / "failed"), key=lambda p: len(p.name))
    assert kept.read_text() == "not an image" and record.name == kept.name + ".error.json"


def test_processed_or_failed_itself_a_symlink_is_refused(tmp_path, fake_classifier):
    """The outbox's own folders must be real folders: a symlink there is a configuration
    error, said at start, not a door."""
    inbox, outbox, outside = tmp_path / "inbox", tmp_path / "outbox", tmp_path / "outside"
    for folder in (inbox, outbox, outside):
        folder.mkdir()
    (outbox / "failed").symlink_to(outside)
    (inbox / "bad.png").write_text("not an image")
    _old(inbox / "bad.png")
    with pytest.raises(ConfigError, match="failed"):
        drain(inbox, outbox, fake_classifier)
    assert _everything_under(outside) == []


def test_a_symlink_planted_as_the_too_big_folder_is_set_aside(tmp_path, fake_classifier, other_file_system):
    """Inputs too big for the outbox's file system are kept in ``inbox/.too-big``, a name a
    writer can take first: a symlink there is renamed aside, never followed, and a real folder
    made; the file still gets its one error record."""
    inbox, outbox, outside = tmp_path / "inbox", other_file_system / "outbox", tmp_path / "outside"
    for folder in (inbox, outside):
        folder.mkdir()
    (inbox / ".too-big").symlink_to(outside)
    with open(inbox / "huge.png", "wb") as fh:
        fh.truncate(2 << 30)
    _old(inbox / "huge.png")
    drain(inbox, outbox, fake_classifier)
    assert _everything_under(outside) == []
    assert records_by_file(outbox) == {"huge.png": "too-large"}
    [record] = errors(outbox)
    assert Path(record["kept_at"]).parent == inbox / ".too-big" and not (inbox / ".too-big").is_symlink()
    [aside] = [p for p in inbox.iterdir() if p.name.startswith(".too-big.")]
    assert aside.is_symlink()




def _watch_once_as(ids: tuple[int, int], inbox: Path, outbox: Path, home: Path) -> None:
    result = subprocess.run(
        ["setpriv", f"--reuid={ids[0]}", f"--regid={ids[1]}", "--clear-groups",
         sys.executable, "-m", "worker", "watch", "--once", "--recursive", "--settle", "0",
         "--inbox", str(inbox), "--outbox", str(outbox)],
        capture_output=True, text=True, timeout=120, env={**os.environ, "HOME": str(home)},
    )
    assert result.returncode == 0, result.stderr


@pytest.mark.slow
def test_a_symlink_named_sub_cannot_lead_later_files_out_of_the_outbox():
    """The attack: with --recursive a writer drops a symlink ``sub`` -> a folder the daemon may
    write to; it is archived as ``failed/sub``. A later ``sub/planted.png`` must not be
    quarantined through it. The daemon runs as the service's user, the writer is root."""
    ids = other_user_ids()
    if ids is None or os.geteuid() != 0:
        pytest.skip(f"needs root and the user {TEST_USER} (./scripts/test creates it)")
    root = Path(tempfile.mkdtemp(prefix="worker-paths-", dir="/tmp"))
    try:
        inbox, outbox, outside = root / "inbox", root / "outbox", root / "outside"
        for folder in (inbox, outside):
            folder.mkdir()
        for folder in (root, inbox, outside):
            os.chown(folder, *ids)
        (inbox / "sub").symlink_to(outside)
        _watch_once_as(ids, inbox, outbox, root)
        (inbox / "sub").mkdir(mode=0o777)  # the writer's folder; the daemon takes files out of it
        os.chmod(inbox / "sub", 0o777)
        (inbox / "sub" / "planted.png").write_text("not an image")
        write(inbox / "sub" / "digit.png", 255 - digit_stroke(100))
        _watch_once_as(ids, inbox, outbox, root)
        assert _everything_under(outside) == [], "written outside the outbox"
        records = records_by_file(outbox)
        assert records.pop("sub/planted.png") == "not-an-image"
        assert records.pop("sub/digit.png") == "row"
        assert list(records) == ["sub"], "the symlink itself has its one record"
    finally:
        shutil.rmtree(root)


def test_an_atomic_write_never_replaces_a_device_or_a_fifo(tmp_path):
    """`report --html /dev/null` as root renamed a file over the device: a special file at the
    target is refused and left as it was."""
    from worker.files import write_atomic

    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    with pytest.raises(OSError, match="not a regular file"):
        write_atomic(fifo, "<html>")
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
    write_atomic(tmp_path / "plain.html", "<html>")  # a plain file is written as before
    write_atomic(tmp_path / "plain.html", "<html>2")
    assert (tmp_path / "plain.html").read_text() == "<html>2"
