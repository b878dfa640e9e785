"""A long-running command (``watch``, ``serve``, ``classify-worker``, ``train``) that cannot start
as configured says why in one line and exits 78, whatever is wrong: an option or an environment
variable it cannot parse, a folder it cannot write, a model it cannot load. systemd's
``RestartPreventExitStatus=78`` then stops, where a traceback's 1 or click's usage 2 would be
restarted for ever. Each case runs as a real process, as a unit would start it."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

EXIT_CONFIG = 78


def run_worker(*args: str, env: dict[str, str] | None = None, unprivileged: bool = False):
    """``python -m worker ARGS``; ``unprivileged``: as root, without the capabilities that let
    root write where a folder's mode says no (so a folder of mode 0555 is read-only to it)."""
    prefix: list[str] = []
    if unprivileged and os.geteuid() == 0:
        if shutil.which("setpriv") is None:
            pytest.skip("as root, needs setpriv to drop CAP_DAC_OVERRIDE")
        prefix = ["setpriv", "--bounding-set=-dac_override,-dac_read_search,-fowner"]
    environ = {k: v for k, v in os.environ.items() if not k.startswith("WORKER_")}
    return subprocess.run([*prefix, sys.executable, "-m", "worker", *args], capture_output=True, text=True,
                          timeout=120, env={**environ, **(env or {})})


def assert_one_line_78(done: subprocess.CompletedProcess, *words: str) -> None:
    assert done.returncode == EXIT_CONFIG, (done.returncode, done.stderr)
    assert "Traceback" not in done.stderr and "Usage:" not in done.stderr, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    for word in words:
        assert word in lines[0], lines[0]


@pytest.fixture
def boxes(tmp_path):
    inbox, outbox = tmp_path / "inbox", tmp_path / "outbox"
    inbox.mkdir()
    return inbox, outbox


@pytest.fixture
def read_only(tmp_path):
    """Makes a folder read-only (mode 0555) for the test, writable again after it."""
    folders: list[Path] = []

    def make(folder: Path) -> Path:
        folder.mkdir(exist_ok=True)
        folder.chmod(0o555)
        folders.append(folder)
        return folder

    yield make
    for folder in folders:
        folder.chmod(0o755)


def test_an_inbox_the_daemon_cannot_write(boxes, read_only):
    inbox, outbox = boxes
    read_only(inbox)
    done = run_worker("watch", "--once", "--inbox", str(inbox), "--outbox", str(outbox), unprivileged=True)
    assert_one_line_78(done, f"inbox {inbox} is not writable")
    assert not (inbox / ".work").exists() and not outbox.exists()


def test_a_work_folder_the_daemon_cannot_write(boxes, read_only):
    """The inbox passes the access check; its .work/ (the daemon's own, read-only) does not."""
    inbox, outbox = boxes
    read_only(inbox / ".work")
    done = run_worker("watch", "--once", "--inbox", str(inbox), "--outbox", str(outbox), unprivileged=True)
    assert done.returncode == EXIT_CONFIG and "Traceback" not in done.stderr, done.stderr
    assert done.stderr.strip().splitlines()[-1] == (
        f"error: inbox {inbox}: cannot keep claims in {inbox / '.work'} (Permission denied); "
        "the worker must be able to read and write both")


def test_an_outbox_the_daemon_cannot_make(boxes, read_only, tmp_path):
    inbox, _ = boxes
    parent = read_only(tmp_path / "locked")
    done = run_worker("watch", "--once", "--inbox", str(inbox), "--outbox", str(parent / "outbox"),
                      unprivileged=True)
    assert_one_line_78(done, "outbox", "not writable", f"it would be made in {parent}")


def test_serve_with_an_inbox_it_cannot_write_uploads_to(boxes, read_only):
    inbox, outbox = boxes
    read_only(inbox)
    done = run_worker("serve", "--inbox", str(inbox), "--outbox", str(outbox), "--port", "0",
                      unprivileged=True)
    assert_one_line_78(done, f"inbox {inbox} is not writable")


@pytest.mark.parametrize(("command", "variable", "value", "option"), [
    ("watch", "WORKER_ON_SUCCESS", "bogus", "--on-success"),
    ("watch", "WORKER_BATCH_SIZE", "abc", "--batch-size"),
    ("watch", "WORKER_ONCE", "maybe", "--once"),
    ("serve", "WORKER_PORT", "http", "--port"),
    ("classify-worker", "WORKER_CONCURRENCY", "0", "--concurrency"),
    ("train", "WORKER_EPOCHS", "ten", "--epochs"),
])
def test_a_bad_value_from_the_environment(boxes, command, variable, value, option):
    inbox, outbox = boxes
    folders = ["--inbox", str(inbox), "--outbox", str(outbox)] if command in ("watch", "serve") else []
    done = run_worker(command, *folders, env={variable: value})
    assert_one_line_78(done, option, variable, value)


@pytest.mark.parametrize("args", [["--batch-size", "abc"], ["--no-such-option"], ["an-argument"]],
                         ids=["bad value", "unknown option", "extra argument"])
def test_a_bad_command_line_of_the_daemon(boxes, args):
    inbox, outbox = boxes
    done = run_worker("watch", "--once", "--inbox", str(inbox), "--outbox", str(outbox), *args)
    assert_one_line_78(done)


def test_a_bad_setting_is_said_before_the_model_loads(boxes, tmp_path):
    """--rescan 0 passes click, fails the settings: said before the (missing) model is looked at."""
    inbox, outbox = boxes
    done = run_worker("watch", "--inbox", str(inbox), "--outbox", str(outbox), "--rescan", "0",
                      "--model", str(tmp_path / "none.keras"))
    assert_one_line_78(done, "--rescan")


def test_a_missing_model(boxes, tmp_path):
    inbox, outbox = boxes
    done = run_worker("watch", "--once", "--inbox", str(inbox), "--outbox", str(outbox),
                      "--model", str(tmp_path / "none.keras"))
    assert_one_line_78(done, "none.keras")


@pytest.mark.parametrize("card", ["{}", "not json {", '{"class_names": "0123456789"}'])
def test_a_model_with_a_bad_card(boxes, tmp_path, card):
    inbox, outbox = boxes
    model = tmp_path / "m.keras"
    model.write_bytes(b"not a model")
    (tmp_path / "m.json").write_text(card)
    done = run_worker("watch", "--once", "--inbox", str(inbox), "--outbox", str(outbox),
                      "--model", str(model))
    assert_one_line_78(done, "m.json")


def test_help_of_a_long_running_command_is_still_help(boxes):
    done = run_worker("watch", "--help", env={"WORKER_BATCH_SIZE": "abc"})
    assert done.returncode == 0 and "--batch-size" in done.stdout, done.stderr


def test_an_interactive_command_keeps_the_usage_message_and_2(tmp_path):
    done = run_worker("report", "--outbox", str(tmp_path), env={"WORKER_REVIEW": "-1"})
    assert done.returncode == 2 and "Usage:" in done.stderr and "--review" in done.stderr, done.stderr


def test_serve_on_an_address_in_use(boxes):
    inbox, outbox = boxes
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = str(taken.getsockname()[1])
        done = run_worker("serve", "--inbox", str(inbox), "--outbox", str(outbox), "--port", port)
    assert_one_line_78(done, f"--port {port}", "cannot listen there")


@pytest.mark.slow
def test_serve_on_the_port_it_bound_first(boxes, real_model_path):
    """The page's socket is bound before the model loads, and it is the one served: --port 0
    names the port the system chose."""
    inbox, outbox = boxes
    page = subprocess.Popen([sys.executable, "-m", "worker", "serve", "--inbox", str(inbox),
                             "--outbox", str(outbox), "--port", "0", "--model", str(real_model_path)],
                            stderr=subprocess.PIPE, text=True)
    try:
        for line in page.stderr:
            if line.startswith("worker page on "):
                break
        url = line.split()[3]
        assert not url.endswith(":0/"), line
        with urllib.request.urlopen(f"{url}api/model", timeout=30) as answer:
            assert answer.status == 200 and json.load(answer)
    finally:
        page.terminate()
        page.wait(30)


@pytest.mark.slow
@pytest.mark.parametrize("access_log", [True, False])
def test_serve_logs_requests_in_the_common_format_only_when_asked(boxes, real_model_path, access_log):
    """--access-log: a line a request, in the format of every other line (time with its zone,
    level, logger), not uvicorn's own; without it, none."""
    inbox, outbox = boxes
    args = [sys.executable, "-m", "worker", "serve", "--inbox", str(inbox), "--outbox", str(outbox),
            "--port", "0", "--model", str(real_model_path), *(["--access-log"] if access_log else [])]
    env = {k: v for k, v in os.environ.items() if k != "JOURNAL_STREAM"}
    page = subprocess.Popen(args, stderr=subprocess.PIPE, text=True, env=env)
    try:
        for line in page.stderr:
            if line.startswith("worker page on "):
                break
        url = line.split()[3]
        with urllib.request.urlopen(f"{url}api/model", timeout=30) as answer:
            assert answer.status == 200
        with urllib.request.urlopen(f"{url}api/model?token=guess-s3cret", timeout=30) as answer:
            assert answer.status == 200  # loopback without --token: any token is ignored
    finally:
        page.terminate()
        rest = page.stderr.read()
        page.wait(30)
    assert "s3cret" not in rest, "a token in a query is never logged"
    logged = [line for line in rest.splitlines() if "/api/model" in line]
    if not access_log:
        assert logged == [], rest
        return
    assert len(logged) == 2 and "token=..." in logged[1], rest
    stamp = r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d\d:\d\d"
    assert re.match(stamp + r" INFO uvicorn\.access: .*GET /api/model.* 200", logged[0]), logged[0]
