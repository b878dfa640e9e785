"""worker status: each live daemon with the model name and version it serves (from its lock
file), and the LSB exit code: 0 while one runs, 3 when none does."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest
from conftest import FakeClassifier, running
from factories import wait_for
from typer.testing import CliRunner

from worker.cli import app
from worker.daemon.claims import Claims
from worker.daemon.daemon_lock import read_about
from worker.daemon.loop import Daemon
from worker.daemon.settings import Settings
from worker.model.artifact import model_version, read_card

runner = CliRunner()


def status_of(inbox, outbox, *more: str):
    return runner.invoke(app, ["status", "--inbox", str(inbox), "--outbox", str(outbox), *more])


def test_a_live_daemon_shows_its_model_and_version(boxes, fake_classifier):
    inbox, outbox = boxes
    daemon = Daemon(Settings(inbox=inbox, outbox=outbox, settle=0), fake_classifier)
    with running(daemon):
        as_json, text = status_of(inbox, outbox, "--json"), status_of(inbox, outbox)
    assert as_json.exit_code == 0 and text.exit_code == 0, text.output
    (alive,) = json.loads(as_json.stdout)["daemons"]
    assert (alive["model"], alive["model_version"], alive["pid"]) == ("fake", "fake-1", os.getpid())
    assert alive["id"] == daemon.claims.owner and alive["since"].endswith("Z")
    assert f"daemon {daemon.claims.owner}: model fake version fake-1 since" in text.stdout

    after = status_of(inbox, outbox, "--json")
    assert after.exit_code == 3 and json.loads(after.stdout)["daemons"] == []


def test_a_reloaded_model_shows_its_new_version(boxes, fake_classifier):
    inbox, outbox = boxes
    newer = FakeClassifier()
    newer.version = "fake-2"
    daemon = Daemon(Settings(inbox=inbox, outbox=outbox, settle=0), fake_classifier, load_model=lambda: newer)
    lock = inbox / ".work" / f"{daemon.claims.owner}.lock"
    with running(daemon):
        assert read_about(lock)["model_version"] == "fake-1"
        daemon.request_reload()
        assert wait_for(lambda: read_about(lock).get("model_version") == "fake-2", 10)
        text = status_of(inbox, outbox)
    assert text.exit_code == 0 and "model fake version fake-2" in text.stdout, text.output


def test_the_note_survives_the_lock_file_made_anew(boxes):
    """A writer renamed .work away: the daemon takes a checked one again, with its note."""
    inbox, _ = boxes
    claims = Claims(inbox)
    try:
        claims.announce(pid=1, model="m", model_version="v", since="t")
        os.rename(inbox / ".work", inbox / "moved")
        claims.keep_in_place()
        assert read_about(inbox / ".work" / f"{claims.owner}.lock") == {
            "pid": 1, "model": "m", "model_version": "v", "since": "t"}
    finally:
        claims.close()


def test_a_daemon_from_before_is_alive_with_no_model_named(boxes):
    """An empty lock file, as daemons before this wrote, still counts, and says so."""
    inbox, outbox = boxes
    old = Claims(inbox)  # holds its lock and says nothing in it
    try:
        text, as_json = status_of(inbox, outbox), status_of(inbox, outbox, "--json")
    finally:
        old.close()
    assert text.exit_code == 0 and as_json.exit_code == 0, text.output
    assert "1 daemon(s) alive" in text.stdout and "model not recorded" in text.stdout
    assert json.loads(as_json.stdout)["daemons"] == [{"id": old.owner}]


@pytest.mark.parametrize("content", [b"", b"not json", b"[1, 2]", b'{"pid": true, "model": 7}',
                                     b'{"model": "m", "model_version": "v", "extra": {"x": 1}}'])
def test_a_lock_file_says_only_fields_of_their_types(tmp_path, content):
    lock = tmp_path / "x.lock"
    lock.write_bytes(content)
    about = read_about(lock)
    assert set(about) <= {"pid", "model", "model_version", "since"}
    assert all(type(about[k]) is (int if k == "pid" else str) for k in about)


@pytest.mark.slow
def test_a_real_daemon_then_none(boxes, real_model_path):
    inbox, outbox = boxes
    card = read_card(real_model_path)
    daemon = subprocess.Popen([sys.executable, "-m", "worker", "watch", "--inbox", str(inbox),
                               "--outbox", str(outbox), "--model", str(real_model_path)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    status = [sys.executable, "-m", "worker", "status", "--inbox", str(inbox), "--outbox", str(outbox)]
    try:
        assert wait_for(lambda: subprocess.run(status, capture_output=True).returncode == 0, 60)
        done = subprocess.run([*status, "--json"], capture_output=True, text=True, timeout=60)
        text = subprocess.run(status, capture_output=True, text=True, timeout=60)
    finally:
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(60) == 0
    (alive,) = json.loads(done.stdout)["daemons"]
    assert (alive["model"], alive["pid"]) == (real_model_path.stem, daemon.pid)
    assert alive["model_version"] == model_version(real_model_path.resolve(), card)
    assert f"model {real_model_path.stem} version {alive['model_version']}" in text.stdout

    gone = subprocess.run(status, capture_output=True, text=True, timeout=60)
    assert gone.returncode == 3 and "0 daemon(s) alive" in gone.stdout, gone.stdout + gone.stderr
